"""The console's pages, mounted on the admin models they show.

The apps keep their own ModelAdmin classes (forms, filters, bulk actions);
the console subclasses them and registers the subclass in their place, so
the console's pages live in this package and the apps' admin modules stay
small. `console` comes after the apps in INSTALLED_APPS, so their admin
modules are imported (and registered) first.
"""

from django.contrib import admin

from rollouts.admin import RolloutAdmin
from rollouts.models import Rollout

from . import rollout_pages

admin.site.site_header = "Fleet console"
admin.site.site_title = "Fleet console"
admin.site.index_title = "Overview"
# The app list in a sidebar takes a quarter of a 1280 px screen from every
# page; the console's pages need the width more, and the header links home.
admin.site.enable_nav_sidebar = False

admin.site.unregister(Rollout)


@admin.register(Rollout)
class RolloutConsoleAdmin(rollout_pages.RolloutPagesMixin, RolloutAdmin):
    class Media:
        css = {"all": ["console/console.css"]}
