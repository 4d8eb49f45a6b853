"""Outcomes of rollout targets in the devices' service history.

Like the events, written from exactly the rows a set-based transition changed
(those tagged with its step), in one statement however many they are.
"""

from django.db import connection

from devices.models import HistorySource, ServiceHistory

from ..models import DeviceStatus, Rollout, RolloutDevice

# A row's status after a step -> the outcome of the history entry the
# rollout wrote for it. `updated` is no verdict yet.
OUTCOME_BY_STATUS = {
    DeviceStatus.HEALTHY: "healthy",
    DeviceStatus.FAILED: "failed",
    DeviceStatus.ROLLED_BACK: "rolled_back",
}


def outcomes_for_step(*, rollout: Rollout, step: int) -> None:
    history = ServiceHistory._meta.db_table
    rows = RolloutDevice._meta.db_table
    cases = " ".join("WHEN %s THEN %s" for _ in OUTCOME_BY_STATUS)
    case_params = [value for pair in OUTCOME_BY_STATUS.items() for value in pair]
    rollout_id = RolloutDevice._meta.get_field("rollout").get_db_prep_value(rollout.pk, connection)
    statuses = ", ".join("%s" for _ in OUTCOME_BY_STATUS)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""UPDATE {history} SET outcome = CASE r.status {cases} END
                FROM {rows} r
                WHERE r.rollout_id = %s AND r.step = %s AND r.status IN ({statuses})
                  AND {history}.rollout_id = r.rollout_id AND {history}.source = %s
                  AND {history}.device_id = r.device_id AND {history}.service = r.service
                  -- On an upgrade path, the entry of the version the row is sent
                  -- now, not the stepping stones' before it.
                  AND {history}.tag = r.new_tag""",
            [*case_params, rollout_id, step, *OUTCOME_BY_STATUS, HistorySource.ROLLOUT],
        )
