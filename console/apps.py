from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    """The operator console: rollout, fleet, image and device pages inside the
    Django admin (its login, permissions and look)."""

    name = "console"
    verbose_name = "Operator console"
