"""Presence (last_seen_at) recorded from polls through a per-process buffer
(devices.presence), its staleness bound, and the filters that read it."""

import threading
import time
from datetime import timedelta

import pytest
from django.db import connections, transaction
from django.utils import timezone

from devices import presence
from devices.models import Device
from devices.selectors import devices_online
from tests.factories import DeviceFactory

STATE = "/api/v1/device/{uuid}/state"


@pytest.fixture
def buffered(settings):
    settings.DEVICE_PRESENCE_FLUSH_SECONDS = 3600  # the test flushes by hand
    presence.buffer.flush()
    yield presence.buffer
    presence.buffer.flush()


def poll(client, device):
    return client.get(STATE.format(uuid=device.uuid), HTTP_AUTHORIZATION=f"Bearer {device.api_key}")


def last_seen(device):
    return Device.objects.values_list("last_seen_at", flat=True).get(pk=device.pk)


@pytest.mark.django_db
def test_a_poll_writes_nothing_and_the_flush_writes_the_time_of_the_poll(api_client, buffered):
    device = DeviceFactory()
    before = timezone.now()
    assert poll(api_client, device).status_code == 200
    after = timezone.now()
    assert last_seen(device) is None
    assert set(buffered.pending()) == {device.pk}
    assert buffered.flush() == 1
    # The time of the poll, not of the flush: within the bound, whatever the delay.
    assert before <= last_seen(device) <= after
    assert buffered.pending() == {}


@pytest.mark.django_db
def test_many_devices_are_written_in_one_statement(api_client, buffered, django_assert_num_queries):
    devices = [DeviceFactory() for _ in range(5)]
    for device in devices:
        poll(api_client, device)
    with django_assert_num_queries(1):
        assert buffered.flush() == 5
    assert all(last_seen(device) is not None for device in devices)


@pytest.mark.django_db
def test_a_poll_within_half_an_interval_of_the_stored_presence_is_not_noted(api_client, buffered):
    device = DeviceFactory()
    recent = timezone.now() - timedelta(seconds=29)
    Device.objects.filter(pk=device.pk).update(last_seen_at=recent)
    poll(api_client, device)
    assert buffered.pending() == {}
    stale = timezone.now() - timedelta(seconds=31)
    Device.objects.filter(pk=device.pk).update(last_seen_at=stale)
    poll(api_client, device)
    assert set(buffered.pending()) == {device.pk}


@pytest.mark.django_db
def test_a_flush_never_moves_presence_back(buffered):
    device = DeviceFactory()
    reported = timezone.now()
    Device.objects.filter(pk=device.pk).update(last_seen_at=reported)
    buffered.note(device.pk, reported - timedelta(seconds=10))
    buffered.flush()
    assert last_seen(device) == reported


@pytest.mark.django_db
def test_the_online_filter_sees_a_device_once_its_poll_is_flushed(api_client, buffered):
    device = DeviceFactory()
    poll(api_client, device)
    assert not devices_online(Device.objects.all(), True).exists()
    buffered.flush()
    assert list(devices_online(Device.objects.all(), True)) == [device]


@pytest.mark.django_db(transaction=True)
def test_a_flush_skips_rows_another_transaction_holds_and_writes_them_later(buffered):
    locked, free = DeviceFactory(), DeviceFactory()
    seen = timezone.now()
    buffered.note(locked.pk, seen)
    buffered.note(free.pk, seen)
    holding, release, flushed = threading.Event(), threading.Event(), threading.Event()

    def hold_the_row():
        try:
            with transaction.atomic():
                Device.objects.filter(pk=locked.pk).update(target_version=2)
                holding.set()
                release.wait(timeout=30)
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold_the_row)
    holder.start()
    try:
        assert holding.wait(timeout=10)
        assert buffered.flush() == 1
        flushed.set()
    finally:
        release.set()
        holder.join(timeout=30)
    assert flushed.is_set()
    assert last_seen(free) == seen
    assert last_seen(locked) is None
    assert set(buffered.pending()) == {locked.pk}
    assert buffered.flush() == 1
    assert last_seen(locked) == seen


@pytest.mark.django_db(transaction=True)
def test_the_background_flush_writes_presence_within_the_flush_period(api_client, settings):
    settings.DEVICE_PRESENCE_FLUSH_SECONDS = 0.2
    device = DeviceFactory()
    polled = timezone.now()
    assert poll(api_client, device).status_code == 200
    deadline = time.monotonic() + 10
    while last_seen(device) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert last_seen(device) is not None
    assert last_seen(device) >= polled
