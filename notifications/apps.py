from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # rollouts never imports notifications: it offers a hook for "events
        # were committed", and this app plugs its dispatcher into it.
        from rollouts.streams.wakeup import on_events_committed

        from .services import dispatch_soon

        on_events_committed(dispatch_soon)
