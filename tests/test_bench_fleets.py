"""bench/fleets.py builds the benchmarks' fleets with raw SQL that names only
the columns it cares about: every other column of a device service must have
a default in the database itself, or the benchmarks break on the next
migration that adds one (as `update_strategy` once did)."""

from bench.fleets import OLD_TAG, build_fleet
from devices.models import DeviceService, DeviceUpdateStrategy


def test_a_fleet_built_by_raw_sql_has_the_orm_defaults(db):
    build_fleet("docker.io/bench/defaults", 3)

    services = DeviceService.objects.filter(device__fleet__slug="defaults")
    assert services.count() == 3
    for service in services:
        assert service.target_tag == OLD_TAG
        assert service.update_strategy == DeviceUpdateStrategy.DOWNLOAD_THEN_KILL
        assert service.stop_timeout_seconds == DeviceService._meta.get_field(
            "stop_timeout_seconds"
        ).default
