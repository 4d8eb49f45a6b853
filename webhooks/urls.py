from django.urls import path

from . import views

urlpatterns = [
    path(
        "webhooks/docker-registry",
        views.DockerRegistryWebhook.as_view(),
        name="webhook-docker-registry",
    ),
    path(
        "webhooks/docker-registry/test",
        views.DockerRegistryWebhookTest.as_view(),
        name="webhook-docker-registry-test",
    ),
]
