from django.urls import path

from fleet.routers import OptionalSlashRouter

from . import api
from .streams import views as streams


router = OptionalSlashRouter()
router.register("image-policies", api.ImagePolicyViewSet, basename="image-policy")
router.register("rollouts", api.RolloutViewSet, basename="rollout")
router.register("images", api.ImageInventoryViewSet, basename="image")

urlpatterns = [
    path("events/stream", streams.EventStreamView.as_view(), name="events-stream"),
    path("rollouts/<str:pk>/stream", streams.RolloutStreamView.as_view(), name="rollout-stream"),
    *router.urls,
]
