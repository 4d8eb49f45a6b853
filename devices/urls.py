from django.urls import path

from fleet.routers import OptionalSlashRouter

from . import api, views

router = OptionalSlashRouter()
router.register("fleets", api.FleetViewSet, basename="fleet")
router.register(
    r"fleets/(?P<fleet_slug>[-a-zA-Z0-9_]+)/members", api.FleetMemberViewSet, basename="fleet-member"
)
router.register("devices", api.DeviceViewSet, basename="device")

urlpatterns = [
    path("device/register", views.device_register, name="device-register"),
    path("device/<str:uuid>/state", views.device_state, name="device-state"),
    *router.urls,
]
