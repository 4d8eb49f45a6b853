"""The console's pages, mounted on the admin models they show.

The apps keep their own ModelAdmin classes (forms, filters, bulk actions);
the console subclasses them and registers the subclass in their place, so
the console's pages live in this package and the apps' admin modules stay
small. `console` comes after the apps in INSTALLED_APPS, so their admin
modules are imported (and registered) first.
"""

from django.contrib import admin

from devices.admin import DeviceAdmin, DeviceTagInline, FleetAdmin, ServiceHistoryInline
from devices.models import Device, Fleet
from rollouts.admin import RolloutAdmin
from rollouts.models import Rollout

from . import fleet_pages, rollout_pages

admin.site.site_header = "Fleet console"
admin.site.site_title = "Fleet console"
admin.site.index_title = "Overview"
# The app list in a sidebar takes a quarter of a 1280 px screen from every
# page; the console's pages need the width more, and the header links home.
admin.site.enable_nav_sidebar = False
# The index leads with the active rollouts (templatetags/console.py).
admin.site.index_template = "console/index.html"

admin.site.unregister(Rollout)
admin.site.unregister(Fleet)
admin.site.unregister(Device)


@admin.register(Rollout)
class RolloutConsoleAdmin(rollout_pages.RolloutPagesMixin, RolloutAdmin):
    class Media:
        css = {"all": ["console/console.css"]}


@admin.register(Fleet)
class FleetConsoleAdmin(fleet_pages.FleetPageMixin, FleetAdmin):
    # The page's "Versions" card replaces the app's version bars field.
    readonly_fields = ["created_at"]


@admin.register(Device)
class DeviceConsoleAdmin(fleet_pages.DevicePageMixin, DeviceAdmin):
    # The page's services table (shown to fleet members too) replaces the
    # app's services inline.
    inlines = [DeviceTagInline, ServiceHistoryInline]
