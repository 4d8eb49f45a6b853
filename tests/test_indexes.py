"""No index of ours is made redundant by another: every index is written on
every insert (and on updates of its columns), so one whose columns lead
another index costs the hot writes (reports, batches, fan-out) and serves no
read the longer one does not."""

import pytest
from django.apps import apps
from django.db import connection

OUR_APPS = ("devices", "rollouts", "notifications", "webhooks", "counters")

# (table, index) pairs where the shorter index leads a longer one. Only plain
# indexes count: a unique or partial one says more than its columns.
REDUNDANT = """
WITH idx AS (
    SELECT i.indexrelid::regclass::text AS name, c.relname AS tbl,
           string_to_array(i.indkey::text, ' ') AS cols,
           -- Operator classes: a varchar_pattern_ops index (Django's for
           -- LIKE on a unique text column) serves other reads than the unique one.
           string_to_array(i.indclass::text, ' ') AS classes,
           i.indisunique AS uniq, i.indpred IS NOT NULL AS partial,
           i.indexprs IS NOT NULL AS expr
    FROM pg_index i
    JOIN pg_class c ON c.oid = i.indrelid
    WHERE c.relname = ANY(%s)
)
SELECT a.tbl, a.name, b.name
FROM idx a JOIN idx b ON a.tbl = b.tbl AND a.name <> b.name
WHERE NOT a.uniq AND NOT a.partial AND NOT a.expr AND NOT b.partial AND NOT b.expr
  AND cardinality(a.cols) <= cardinality(b.cols)
  AND b.cols[1:cardinality(a.cols)] = a.cols
  AND b.classes[1:cardinality(a.classes)] = a.classes
ORDER BY 1, 2, 3
"""


def our_tables() -> list[str]:
    return [
        model._meta.db_table
        for app in OUR_APPS
        if apps.is_installed(app)
        for model in apps.get_app_config(app).get_models()
    ]


@pytest.mark.django_db
def test_no_index_of_ours_leads_another_index_of_its_table():
    tables = our_tables()
    assert "devices_deviceservice" in tables and "rollouts_rolloutdevice" in tables
    with connection.cursor() as cursor:
        cursor.execute(REDUNDANT, [tables])
        redundant = cursor.fetchall()
    assert redundant == []
