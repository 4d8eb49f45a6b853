from django.urls import path
from rest_framework.routers import SimpleRouter

from . import api
from .streams import views as streams


class OptionalSlashRouter(SimpleRouter):
    """The contract spells actions without a trailing slash
    (`/rollouts/{id}/pause`) and lists with one (`/rollouts/{id}/devices/`):
    accept both spellings everywhere instead of redirecting POSTs."""

    def __init__(self):
        super().__init__()
        self.trailing_slash = "/?"


router = OptionalSlashRouter()
router.register("image-policies", api.ImagePolicyViewSet, basename="image-policy")
router.register("rollouts", api.RolloutViewSet, basename="rollout")

urlpatterns = [
    path("events/stream", streams.EventStreamView.as_view(), name="events-stream"),
    path("rollouts/<str:pk>/stream", streams.RolloutStreamView.as_view(), name="rollout-stream"),
    *router.urls,
]
