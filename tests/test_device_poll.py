import pytest

from tests.factories import DeviceFactory, DeviceServiceFactory

pytestmark = pytest.mark.django_db


def poll(client, device, **headers):
    return client.get(
        f"/api/v1/device/{device.uuid}/state", HTTP_AUTHORIZATION=f"Bearer {device.api_key}", **headers
    )


def test_it_answers_200_then_304_with_the_etag(api_client):
    service = DeviceServiceFactory()
    first = poll(api_client, service.device)
    assert first.status_code == 200
    assert first.json()["services"]["web"]["image"] == "docker.io/iotistic/myapp"
    second = poll(api_client, service.device, HTTP_IF_NONE_MATCH=first["ETag"])
    assert second.status_code == 304
    assert second.content == b""
