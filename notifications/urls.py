from rollouts.urls import OptionalSlashRouter

from . import api

router = OptionalSlashRouter()
router.register("notification-hooks", api.NotificationHookViewSet, basename="notification-hook")

urlpatterns = router.urls
