from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from . import ops

handler400 = "fleet.api.handler400"
handler403 = "fleet.api.handler403"
handler404 = "fleet.api.handler404"
handler500 = "fleet.api.handler500"

urlpatterns = [
    # The console is the admin; "View site" and a bare host name lead there.
    path("", RedirectView.as_view(pattern_name="admin:index"), name="home"),
    path("healthz", ops.healthz, name="healthz"),
    path("readyz", ops.readyz, name="readyz"),
    path("metrics", ops.metrics, name="metrics"),
    path("admin/images/", include("console.urls")),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api/v1/", include("devices.urls")),
    path("api/v1/", include("rollouts.urls")),
    path("api/v1/", include("webhooks.urls")),
    path("api/v1/", include("notifications.urls")),
]
