from django.apps import AppConfig


class RolloutsConfig(AppConfig):
    name = "rollouts"

    def ready(self) -> None:
        # Register the tasks in every process, web included: the fan-out is
        # enqueued by task name, and a name Celery has not registered yet is
        # sent to the broker even in eager mode (so a test run that imports
        # no task module first never fans out).
        from . import tasks  # noqa: F401

        # `GET /devices/?image=&behind=true` asks us what "latest" is.
        from devices.selectors import register_behind_selector

        from .inventory import devices_behind

        register_behind_selector(devices_behind)
