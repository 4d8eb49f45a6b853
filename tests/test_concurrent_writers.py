"""Races between writers that share rows: pushes, ticks, operators, reports.

Each test forces the overlap (a thread holds a lock, or a change is committed
at an exact call site) so the race happens on every run, not by luck.
"""

import threading
import time

import pytest
from django.db import transaction

from devices import services as device_services
from devices.models import Device, DeviceService
from rollouts.models import ACTIVE_STATUSES, Rollout, RolloutDevice
from rollouts.services import engine, fanout, rollout_create_for_push, rollout_fan_out
from webhooks.parsers import ParsedDelivery, Push
from webhooks.services import delivery_receive

from .concurrency import join, start
from .rollout_helpers import IMAGE, build_fleet, policy

pytestmark = pytest.mark.django_db(transaction=True)

SIDECAR = "docker.io/iotistic/sidecar"


def _run_queued_fan_outs() -> None:
    """What the worker does with the queued fan-out tasks."""
    for rollout_id in Rollout.objects.filter(fanned_out_at__isnull=True).values_list("pk", flat=True):
        rollout_fan_out(rollout_id=rollout_id)


def _hold_rollout_locks(rollout_ids, errors) -> tuple[threading.Thread, threading.Event]:
    """A thread that locks the rollouts (as a long tick would) until released."""
    release = threading.Event()

    def hold():
        with transaction.atomic():
            list(Rollout.objects.select_for_update().filter(pk__in=rollout_ids))
            release.wait(10)

    thread = start(hold, errors)
    time.sleep(0.3)
    return thread, release


def test_it_keeps_one_active_rollout_when_two_pushes_of_an_image_race(queued_tasks):
    build_fleet(20)
    policy()
    old = rollout_create_for_push(image=IMAGE, tag="v1.5.0", digest=None).rollout
    errors: list[BaseException] = []
    holder, release = _hold_rollout_locks([old.pk], errors)
    pushes = [
        start(lambda tag=tag: rollout_create_for_push(image=IMAGE, tag=tag, digest=None), errors)
        for tag in ("v2.0.0", "v3.0.0")
    ]
    time.sleep(0.5)
    release.set()
    join([holder, *pushes], errors)
    _run_queued_fan_outs()
    active = Rollout.objects.filter(image=IMAGE, status__in=ACTIVE_STATUSES)
    assert active.count() == 1


def test_it_does_not_deadlock_deliveries_that_push_two_images_in_opposite_orders(queued_tasks):
    build_fleet(5)
    DeviceService.objects.bulk_create(
        DeviceService(device=device, name="side", target_image=SIDECAR, target_tag="v1")
        for device in Device.objects.all()
    )
    policy()
    first = rollout_create_for_push(image=IMAGE, tag="v1.5.0", digest=None).rollout
    second = rollout_create_for_push(image=SIDECAR, tag="v1.5", digest=None).rollout
    errors: list[BaseException] = []
    holder, release = _hold_rollout_locks([first.pk, second.pk], errors)
    one = ParsedDelivery("distribution", pushes=(Push(IMAGE, "v2"), Push(SIDECAR, "v2")))
    other = ParsedDelivery("distribution", pushes=(Push(SIDECAR, "v3"), Push(IMAGE, "v3")))
    deliveries = [
        start(lambda: delivery_receive(parsed=one, body=b"1", headers={}), errors),
        start(lambda: delivery_receive(parsed=other, body=b"2", headers={}), errors),
    ]
    time.sleep(0.5)
    release.set()
    join([holder, *deliveries], errors)
    _run_queued_fan_outs()
    for image in (IMAGE, SIDECAR):
        assert Rollout.objects.filter(image=image, status__in=ACTIVE_STATUSES).count() == 1


def test_it_leaves_an_operator_change_made_while_a_batch_is_scheduled(queued_tasks, monkeypatch):
    build_fleet(3)
    policy(batch_percentages=[100])
    rollout = rollout_create_for_push(image=IMAGE, tag="v2.0.0", digest=None).rollout
    device = Device.objects.order_by("id").first()
    nginx = device_services.ServiceTarget("docker.io/library/nginx", "1.25")
    retarget = engine._retarget_services

    def operator_commits_first(*args, **kwargs):
        errors: list[BaseException] = []
        join([start(lambda: device_services.device_set_targets(device_id=device.pk, targets={"web": nginx}), errors)], errors)
        return retarget(*args, **kwargs)

    monkeypatch.setattr(engine, "_retarget_services", operator_commits_first)
    rollout_fan_out(rollout_id=rollout.pk)
    service = DeviceService.objects.get(device=device, name="web")
    assert (service.target_image, service.target_tag) == ("docker.io/library/nginx", "1.25")
    others = DeviceService.objects.exclude(device=device)
    assert set(others.values_list("target_tag", flat=True)) == {"v2.0.0"}


def test_it_puts_a_device_that_appears_during_the_fan_out_in_the_last_batch(queued_tasks, monkeypatch):
    fleet = build_fleet(10)
    policy(batch_percentages=[50, 100])
    rollout = rollout_create_for_push(image=IMAGE, tag="v2.0.0", digest=None).rollout
    insert = fanout._insert_rollout_devices

    def device_added_first(*args, **kwargs):
        errors: list[BaseException] = []
        join([start(lambda: build_fleet(3, fleet=fleet), errors)], errors)
        return insert(*args, **kwargs)

    monkeypatch.setattr(fanout, "_insert_rollout_devices", device_added_first)
    rollout_fan_out(rollout_id=rollout.pk)
    rows = RolloutDevice.objects.filter(rollout=rollout)
    assert not rows.filter(batch__isnull=True).exists()
    assert rows.filter(batch=2).count() == 8


def test_it_does_not_deadlock_a_report_and_a_deployment_naming_services_in_other_orders():
    build_fleet(1)
    device = Device.objects.get()
    DeviceService.objects.create(
        device=device, name="db", target_image="docker.io/library/postgres", target_tag="16"
    )
    errors: list[BaseException] = []
    release = threading.Event()

    def hold_services():
        with transaction.atomic():
            list(DeviceService.objects.select_for_update().filter(device=device))
            release.wait(10)

    holder = start(hold_services, errors)
    time.sleep(0.3)
    running = {"status": "running", "health": "healthy"}
    report = {
        "web": {"image": IMAGE, "tag": "v1.0.0", **running},
        "db": {"image": "docker.io/library/postgres", "tag": "16", **running},
    }
    targets = {
        "db": device_services.ServiceTarget("docker.io/library/postgres", "17"),
        "web": device_services.ServiceTarget(IMAGE, "v9"),
    }
    writers = [
        start(lambda: device_services.device_report_state(device_id=device.pk, target_version=1, services=report), errors),
        start(lambda: device_services.device_set_targets(device_id=device.pk, targets=targets), errors),
    ]
    time.sleep(0.5)
    release.set()
    join([holder, *writers], errors)
    assert Device.objects.get().target_version == 2


def test_it_answers_a_push_without_waiting_for_a_tick_that_holds_the_old_rollout(queued_tasks):
    build_fleet(10)
    policy()
    old = rollout_create_for_push(image=IMAGE, tag="v1.5.0", digest=None).rollout
    rollout_fan_out(rollout_id=old.pk)
    errors: list[BaseException] = []
    holder, release = _hold_rollout_locks([old.pk], errors)
    try:
        # The holder never lets go before `release`: were the push to wait
        # for its lock, this call would hang until the thread's 10 s timeout.
        new = rollout_create_for_push(image=IMAGE, tag="v2.0.0", digest=None).rollout
        assert Rollout.objects.get(pk=old.pk).status == "in_progress"
        assert new.supersede_later == [str(old.pk)]
    finally:
        release.set()
        join([holder], errors)
    rollout_fan_out(rollout_id=new.pk)
    old.refresh_from_db()
    assert (old.status, old.superseded_by_id) == ("superseded", new.pk)
    assert RolloutDevice.objects.filter(rollout=new).count() == 10
    assert Rollout.objects.get(pk=new.pk).supersede_later == []
