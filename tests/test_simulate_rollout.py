"""`manage.py simulate_rollout`: a virtual fleet driven through the real engine."""

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from devices.models import Device, DeviceService, Fleet
from rollouts.models import ImagePolicy, Rollout, RolloutDevice, RolloutEvent

from .rollout_helpers import build_fleet, policy, push, statuses

pytestmark = pytest.mark.django_db

RESULT_KEYS = {
    "devices", "silent_devices", "status", "status_reason", "batches_reached", "total_batches",
    "devices_targeted", "devices_ran_new_image", "devices_failed", "failures",
    "devices_rolled_back", "devices_back_on_old_image", "max_on_failing_release",
    "max_failing_at_once", "seconds_to_stop", "simulated_seconds", "ticks", "parameters",
    "offline_devices", "devices_deferred", "retries", "seconds_to_detect",
}
# Batches released whole, as before the ramp: these tests are about batches.
WHOLE = ["--ramp-initial", "none"]
# Every device pulls within the first tick and shows its outcome at once.
FAST_DEVICES = [
    "--pull-delay-distribution", "uniform", "--pull-delay-mean", "5", "--health-delay", "0",
]


def simulate(*args: str) -> dict:
    out = StringIO()
    call_command("simulate_rollout", "--json", *args, stdout=out, stderr=StringIO())
    return json.loads(out.getvalue())


def test_it_pauses_a_bad_release_inside_batch_1_and_rolls_its_devices_back():
    result = simulate("--devices", "300", "--bad-rate", "1.0", "--keep", *WHOLE)
    assert result["status"] == "paused"
    assert result["batches_reached"] == 1
    assert result["devices_targeted"] == 30
    assert 5 <= result["devices_failed"] <= 30
    assert result["devices_rolled_back"] == 30
    assert result["devices_back_on_old_image"] == 30
    assert 0 < result["max_on_failing_release"] <= 30
    rollout = Rollout.objects.get(pk=result["rollout_id"])
    assert statuses(rollout, batch__gt=1) == {("pending", ""): 270}
    outside = Device.objects.filter(fleet__slug=result["fleet"]).exclude(
        rollout_entries__batch=1
    )
    assert outside.count() == 270
    # Never told about the new image, so never asked to pull it.
    assert set(outside.values_list("target_version", flat=True)) == {1}
    reported = DeviceService.objects.filter(device__in=outside).values_list("reported_tag", flat=True)
    assert set(reported) == {"v1"}


def test_it_rolls_back_exactly_the_failed_devices_when_all_fail_in_one_tick():
    result = simulate("--devices", "300", "--bad-rate", "1.0", *FAST_DEVICES, *WHOLE)
    assert result["status"] == "paused"
    assert result["seconds_to_stop"] == 15
    assert result["devices_targeted"] == result["devices_failed"] == 30
    assert result["devices_rolled_back"] == result["devices_failed"]
    assert sum(result["failures"].values()) == 30


def test_it_completes_a_good_release():
    result = simulate("--devices", "300", "--bad-rate", "0", "--batch-delay-minutes", "5")
    assert result["status"] == "completed"
    assert result["batches_reached"] == result["total_batches"] == 3
    assert result["devices_targeted"] == result["devices_ran_new_image"] == 300
    assert result["devices_failed"] == result["devices_rolled_back"] == 0
    assert result["max_on_failing_release"] == 0
    # Batch 1 and 2 each end with a 5 minute delay.
    assert result["seconds_to_stop"] > 2 * 5 * 60


def test_it_gives_the_same_result_for_the_same_seed():
    args = ["--devices", "200", "--bad-rate", "0.15", "--never-report-rate", "0.05",
            "--max-failure-rate", "0.5", "--batches", "20,100", "--batch-delay-minutes", "1",
            "--health-timeout-seconds", "150"]
    first = simulate(*args, "--seed", "7")
    assert simulate(*args, "--seed", "7") == first
    assert simulate(*args, "--seed", "8") != first


def test_it_starts_a_manual_rollout_itself():
    result = simulate("--devices", "100", "--strategy", "manual", "--batches", "100", *FAST_DEVICES)
    assert result["status"] == "completed"
    assert result["devices_targeted"] == 100


def test_it_leaves_failed_devices_on_the_bad_release_without_auto_rollback():
    result = simulate("--devices", "200", "--bad-rate", "1", "--no-auto-rollback", *FAST_DEVICES, *WHOLE)
    assert result["status"] == "paused"
    assert result["devices_failed"] == 20
    assert result["devices_rolled_back"] == result["devices_back_on_old_image"] == 0


def test_it_passes_unhealthy_devices_when_the_health_check_is_off():
    result = simulate(
        "--devices", "100", "--bad-rate", "1", "--crash-share", "0", "--no-health-check",
        "--batches", "100", *FAST_DEVICES,
    )
    assert result["status"] == "completed"
    assert result["devices_failed"] == 0
    assert result["max_failing_at_once"] == 100


def test_it_answers_json_with_the_documented_keys():
    result = simulate("--devices", "200", "--batches", "50,100", "--batch-delay-minutes", "1")
    assert set(result) == RESULT_KEYS
    assert set(result["failures"]) == {"unhealthy", "crashed", "timeout"}
    assert result["parameters"]["batch_percentages"] == [50, 100]
    assert result["parameters"]["devices"] == 200


def test_it_counts_devices_that_never_report_as_timeouts():
    result = simulate(
        "--devices", "300", "--never-report-rate", "0.1", "--max-failure-rate", "0.5",
        "--batch-delay-minutes", "1", "--health-timeout-seconds", "120", *FAST_DEVICES,
    )
    assert result["status"] == "completed"
    assert result["silent_devices"] > 0
    assert result["failures"] == {"timeout": result["silent_devices"], "unhealthy": 0, "crashed": 0}
    assert result["devices_ran_new_image"] == 300 - result["silent_devices"]


def test_it_stops_at_max_hours_with_the_rollout_still_going():
    result = simulate("--devices", "100", "--max-hours", "0.05")
    assert result["status"] == "in_progress"
    assert result["seconds_to_stop"] is None
    assert result["simulated_seconds"] == 180
    assert result["ticks"] == 12


def test_it_leaves_nothing_behind_without_keep():
    simulate("--devices", "200", "--bad-rate", "1.0")
    for model in (Fleet, Device, DeviceService, ImagePolicy, Rollout, RolloutDevice, RolloutEvent):
        assert model.objects.count() == 0, model


def test_it_never_advances_other_rollouts():
    build_fleet(20)
    policy()
    other = push()  # scheduled long before the simulator's virtual clock starts
    before = statuses(other)
    simulate("--devices", "200", "--batches", "100", "--keep")
    other.refresh_from_db()
    assert other.status == "in_progress"
    assert statuses(other) == before == {("scheduled", ""): 2, ("pending", ""): 18}


def test_it_writes_reports_in_the_same_number_of_queries_for_any_fleet_size():
    def queries(devices: int) -> int:
        with CaptureQueriesContext(connection) as captured:
            # Whole batches: a ramp takes more ticks for more devices (by design).
            result = simulate("--devices", str(devices), "--batches", "100", *FAST_DEVICES, *WHOLE)
        assert result["status"] == "completed"
        return len(captured)

    assert queries(50) == queries(400)


def test_a_bad_release_reaches_only_the_ramp_with_a_fresh_policy():
    result = simulate("--devices", "1000", "--bad-rate", "1.0")
    assert result["status"] == "paused"
    assert result["devices_targeted"] == 10
    assert result["seconds_to_detect"] <= 300 + 2 * 15
    assert result["parameters"]["ramp_initial"] == 10


def test_it_defers_offline_devices_and_completes():
    result = simulate(
        "--devices", "300", "--offline-rate", "0.3", "--batch-delay-minutes", "1",
        "--health-timeout-seconds", "120", *FAST_DEVICES,
    )
    assert result["status"] == "completed"
    assert result["offline_devices"] > 60
    assert result["devices_deferred"] == result["offline_devices"]
    assert result["devices_failed"] == 0


def test_it_retries_flaky_devices_without_a_pause():
    result = simulate(
        "--devices", "300", "--flaky-rate", "0.3", "--max-retries", "1",
        "--batch-delay-minutes", "1", *FAST_DEVICES,
    )
    assert result["status"] == "completed"
    assert result["devices_failed"] == 0
    assert 60 < result["retries"] < 120


def test_flaky_devices_pause_a_rollout_without_retries():
    result = simulate("--devices", "300", "--flaky-rate", "0.3", "--batch-delay-minutes", "1", *FAST_DEVICES)
    assert result["status"] == "paused"
    assert result["retries"] == 0


def test_it_prints_the_release_safety_table_of_the_scenarios():
    out, err = StringIO(), StringIO()
    call_command("simulate_rollout", "--scenarios", "--devices", "200", "--seeds", "2", stdout=out, stderr=err)
    lines = out.getvalue().splitlines()
    assert lines[0] == "| scenario | figure | goal | met |"
    assert len(lines) == 2 + 5
    assert "false pauses" in lines[4] and "| 0 (" in lines[4]
    assert "offline" in err.getvalue()
    assert Fleet.objects.count() == 0


def test_the_flaky_row_says_which_seeds_ran_to_the_end():
    def flaky_row(*args: str) -> str:
        out = StringIO()
        call_command(
            "simulate_rollout", "--scenarios", "--devices", "100", *args, stdout=out, stderr=StringIO()
        )
        return next(line for line in out.getvalue().splitlines() if "false pauses" in line)

    assert "seeds 1 to the end and 2-3 through batch 1" in flaky_row("--seeds", "3", "--full-seeds", "1")
    every_seed_whole = flaky_row("--seeds", "2", "--full-seeds", "2")
    assert "seeds 1-2 to the end:" in every_seed_whole and "batch 1" not in every_seed_whole


def test_it_prints_a_progress_bar_and_a_table():
    out, err = StringIO(), StringIO()
    call_command("simulate_rollout", "--devices", "200", "--bad-rate", "1", stdout=out, stderr=err)
    assert "\r[" in err.getvalue()
    table = out.getvalue()
    labels = [
        "final status", "batches reached", "devices that received the new image",
        "devices failed", "devices rolled back", "virtual time to pause",
        "max devices on the failing release",
    ]
    for label in labels:
        assert label in table
    assert "paused" in table


@pytest.mark.parametrize(
    "args, message",
    [
        (["--batches", "50,10"], "strictly increasing"),
        (["--batches", "10,x,100"], "--batches"),
        (["--bad-rate", "1.5"], "Bad rate"),
        (["--devices", "0"], "Devices"),
        (["--ramp-factor", "1"], "ramp factor"),
        (["--ramp-initial", "0"], "Ramp initial"),
        (["--max-retries", "11"], "Max retries"),
        (["--offline-rate", "2"], "Offline rate"),
    ],
)
def test_it_refuses_impossible_settings(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("simulate_rollout", *args, stdout=StringIO(), stderr=StringIO())
    assert Fleet.objects.count() == 0
