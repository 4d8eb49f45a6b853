"""Prepared statements for the agent endpoints: the poll's and the report's.

A fleet's agents send the same statements thousands of times a minute with
other values, and PostgreSQL parses and plans a statement every time unless
it is prepared: for a report's two statements that was about half of the
database's CPU (EXPLAIN: 0.12-0.15 ms of planning against as much
executing). Django binds parameters on the client and leaves prepared
statements off (they do not survive some connection poolers), so these
statements go through a cursor of their own: psycopg's server-side binding,
each statement prepared on its first run on a connection (psycopg keeps the
last 100 per connection). The cursor is wrapped as Django wraps its own, so
the statements are counted like any other (the query-count tests see them)
and logged with their timing, though Django's debug log shows their text as
None.

Off with DEVICE_PREPARED_STATEMENTS=false (behind a pooler in transaction
mode that does not keep prepared statements, such as PgBouncer before 1.21),
and on databases other than PostgreSQL: there the ordinary cursor runs them.
"""

import sys

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections

# psycopg prepares nothing on a connection whose threshold is None (Django's
# default): on ours it is a count no statement reaches, so that only the
# statements run here, which ask for it, are prepared.
ONLY_WHEN_ASKED = sys.maxsize


def _preparing_cursor_class():
    from django.db.backends.postgresql.base import ServerBindingCursor

    class PreparingCursor(ServerBindingCursor):
        """Binds on the server and prepares every statement it runs."""

        def execute(self, query, params=None, *, prepare=None, binary=None):
            return super().execute(query, params, prepare=True, binary=binary)

    return PreparingCursor


_PreparingCursor = None


def prepared_cursor():
    """A cursor of the default database whose statements are prepared (see
    the module's docstring), or its ordinary cursor where they are not."""
    global _PreparingCursor
    connection = connections[DEFAULT_DB_ALIAS]
    if connection.vendor != "postgresql" or not settings.DEVICE_PREPARED_STATEMENTS:
        return connection.cursor()
    if _PreparingCursor is None:
        _PreparingCursor = _preparing_cursor_class()
    # What connection.cursor() does, with our cursor class.
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    raw = connection.connection
    if raw.prepare_threshold is None:
        raw.prepare_threshold = ONLY_WHEN_ASKED
    with connection.wrap_database_errors:
        return connection._prepare_cursor(_PreparingCursor(raw))
