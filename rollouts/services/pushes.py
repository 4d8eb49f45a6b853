"""The newest push seen of each image (the inventory's `newest_push`)."""

from datetime import datetime

from django.db import connection

from ..models import ImagePush


def push_record(*, image: str, tag: str, digest: str | None, trigger: str, now: datetime) -> None:
    """Remember this push as its image's newest, unless a newer one is known
    (a simulation's virtual clock may run behind). One upsert."""
    table = connection.ops.quote_name(ImagePush._meta.db_table)
    columns = ", ".join(
        connection.ops.quote_name(name) for name in ("image", "tag", "digest", "trigger", "received_at")
    )
    updates = ", ".join(
        f"{name} = EXCLUDED.{name}"
        for name in (connection.ops.quote_name(each) for each in ("tag", "digest", "trigger", "received_at"))
    )
    received_at = connection.ops.quote_name("received_at")
    sql = f"""
        INSERT INTO {table} ({columns}) VALUES (%s, %s, %s, %s, %s)
        ON CONFLICT ({connection.ops.quote_name("image")}) DO UPDATE SET {updates}
        WHERE {table}.{received_at} <= EXCLUDED.{received_at}
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [image, tag, digest, trigger, connection.ops.adapt_datetimefield_value(now)])
