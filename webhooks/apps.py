import logging

from django.apps import AppConfig
from django.conf import settings

logger = logging.getLogger(__name__)


class WebhooksConfig(AppConfig):
    name = "webhooks"
    verbose_name = "registry webhooks"

    def ready(self) -> None:
        # Once per process, at start: an open endpoint is a legitimate choice
        # on a closed network, but never one to make by accident.
        if not settings.DOCKER_WEBHOOK_SECRET:
            logger.warning(
                "DOCKER_WEBHOOK_SECRET is not set: registry webhooks are accepted "
                "without authentication."
            )
