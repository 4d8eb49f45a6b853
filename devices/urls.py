from django.urls import path
from rest_framework.routers import SimpleRouter

from . import api, views

router = SimpleRouter()
router.register("fleets", api.FleetViewSet, basename="fleet")
router.register("devices", api.DeviceViewSet, basename="device")

urlpatterns = [
    path("device/register", views.device_register, name="device-register"),
    path("device/<str:uuid>/state", views.device_state, name="device-state"),
    *router.urls,
]
