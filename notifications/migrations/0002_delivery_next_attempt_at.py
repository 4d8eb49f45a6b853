from django.db import migrations, models
from django.db.models.functions import Coalesce


def pending_are_due(apps, schema_editor):
    # Deliveries pending before this migration: due since their last attempt
    # (or creation), so the dispatch pass picks up any whose task was lost.
    Delivery = apps.get_model("notifications", "NotificationDelivery")
    Delivery.objects.filter(status="pending").update(
        next_attempt_at=Coalesce("last_attempt_at", "created_at")
    )


class Migration(migrations.Migration):

    dependencies = [
        ("notifications", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="notificationdelivery",
            name="next_attempt_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddIndex(
            model_name="notificationdelivery",
            index=models.Index(
                condition=models.Q(("status", "pending")), fields=["next_attempt_at"], name="delivery_due_idx"
            ),
        ),
        migrations.RunPython(pending_are_due, migrations.RunPython.noop),
    ]
