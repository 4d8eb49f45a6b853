"""The poll's one statement is prepared on the server (devices.prepared),
once per connection and shape, whether Django or the WSGI fast path answers;
still one counted statement; nothing prepared with DEVICE_PREPARED_STATEMENTS off."""

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from devices.models import Device
from devices.views import state_etag
from tests.factories import DeviceServiceFactory

from .test_report_prepared import new_connection, prepared_statements


def poll(client, device, etag=None):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {device.api_key}"}
    if etag:
        headers["HTTP_IF_NONE_MATCH"] = etag
    return client.get(f"/api/v1/device/{device.uuid}/state", **headers)


def poll_statements() -> list[str]:
    return [sql for sql in prepared_statements() if "CASE WHEN" in sql]


@pytest.mark.django_db(transaction=True)
def test_a_polls_statement_is_prepared_once_per_connection_and_shape(client):
    new_connection()
    devices = [DeviceServiceFactory().device for _ in range(3)]
    for device in devices * 2:
        assert poll(client, device, state_etag(device.target_version)).status_code == 304
    # Without an ETag: the statement of another shape (no versions to compare).
    for device in devices:
        assert poll(client, device).status_code == 200
    assert len(poll_statements()) == 2, prepared_statements()


@pytest.mark.django_db(transaction=True)
def test_with_prepared_statements_off_a_poll_prepares_nothing(client, settings):
    settings.DEVICE_PREPARED_STATEMENTS = False
    new_connection()
    device = DeviceServiceFactory().device
    assert poll(client, device, state_etag(device.target_version)).status_code == 304
    assert poll(client, device).status_code == 200
    assert poll_statements() == []


@pytest.mark.django_db
def test_a_prepared_poll_is_still_one_counted_statement(client, django_assert_num_queries):
    # Seen just now: no poll of this test is due to record presence.
    device = DeviceServiceFactory(device__last_seen_at=timezone.now()).device
    for _ in range(2):
        with django_assert_num_queries(1):
            assert poll(client, device, state_etag(device.target_version)).status_code == 304
        with django_assert_num_queries(1):
            assert poll(client, device).status_code == 200
    assert connection.vendor == "postgresql"


def alter_target_version(to_type: str) -> None:
    """ALTER from a connection of its own, as a migration run elsewhere would
    (psycopg forgets its prepared statements after DDL on its own connection)."""
    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as other:
        other.execute(f"ALTER TABLE {Device._meta.db_table} ALTER COLUMN target_version TYPE {to_type}")


@pytest.mark.django_db(transaction=True)
def test_a_poll_survives_a_migration_that_changes_a_prepared_result_column(client):
    """PostgreSQL refuses to run a prepared statement whose result type
    changed ("cached plan must not change result type"); the poll runs it
    again on a new connection instead of failing until the connection ends."""
    device = DeviceServiceFactory().device
    etag = state_etag(device.target_version)
    assert poll(client, device, etag).status_code == 304
    assert poll_statements()
    alter_target_version("numeric")
    try:
        assert poll(client, device, etag).status_code == 304
        assert poll(client, device).status_code == 200
    finally:
        alter_target_version("bigint")
