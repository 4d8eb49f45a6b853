"""The device report's two statements are prepared on the server
(devices.prepared), still counted as statements, and run unprepared when
DEVICE_PREPARED_STATEMENTS is off."""

import json

import pytest
from django.db import connection

from devices.models import Device, DeviceService
from tests.factories import DeviceFactory, DeviceServiceFactory

BODY = {
    "target_version": 1,
    "services": {
        "web": {"image": "docker.io/iotistic/myapp", "tag": "v2", "status": "running"},
        "sidecar": {"health": "healthy"},
    },
}


def report(client, device, body=BODY):
    return client.patch(
        f"/api/v1/device/{device.uuid}/state",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {device.api_key}",
    )


def prepared_statements() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [row[0] for row in cursor.fetchall()]


def new_connection():
    # A connection of its own, so that no earlier test's statements are on it.
    connection.close()
    assert prepared_statements() == []


@pytest.mark.django_db(transaction=True)
def test_a_reports_statements_are_prepared_once_per_connection(api_client):
    new_connection()
    devices = [DeviceServiceFactory().device, DeviceFactory()]
    for device in devices * 2:
        assert report(api_client, device).status_code == 200
    statements = prepared_statements()
    assert len([sql for sql in statements if "api_key_hash" in sql]) == 1, statements
    writes = [sql for sql in statements if sql.startswith("WITH upsert_0")]
    assert len(writes) == 1, statements
    # Both devices' reports were stored in full.
    for device in devices:
        rows = DeviceService.objects.filter(device=device).values_list("name", "reported_status")
        assert dict(rows) == {"web": "running", "sidecar": None}
        assert Device.objects.get(pk=device.pk).reported_target_version == 1


@pytest.mark.django_db(transaction=True)
def test_with_prepared_statements_off_a_report_prepares_nothing(api_client, settings):
    settings.DEVICE_PREPARED_STATEMENTS = False
    new_connection()
    device = DeviceServiceFactory().device
    assert report(api_client, device).status_code == 200
    assert prepared_statements() == []
    assert DeviceService.objects.get(device=device, name="web").reported_status == "running"


@pytest.mark.django_db
def test_a_prepared_report_is_still_two_counted_statements(api_client, django_assert_num_queries):
    device = DeviceServiceFactory().device
    for _ in range(2):
        with django_assert_num_queries(2):
            assert report(api_client, device).status_code == 200
