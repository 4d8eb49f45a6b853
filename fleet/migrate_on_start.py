"""`migrate` for the web process's start (fleet/gunicorn.conf.py).

Several web processes may start at once (compose scale, a rolling deploy):
on PostgreSQL an advisory lock makes them migrate one after the other, so the
second finds nothing left to do instead of racing the first on the same DDL.
"""

import django
from django.core.management import call_command

# Any constant both processes agree on; "fleet" in ASCII.
MIGRATION_LOCK_KEY = 0x666C656574


def migrate_with_lock() -> None:
    django.setup()
    from django.db import connection, connections

    try:
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_lock(%s)", [MIGRATION_LOCK_KEY])
        call_command("migrate", interactive=False, verbosity=1)
    finally:
        # Closing the session releases the advisory lock, and the master must
        # not hand an open connection to the workers it forks.
        connections.close_all()
