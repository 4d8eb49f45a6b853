from django.core.management.base import BaseCommand

from rollouts.services import rollouts_advance_all


class Command(BaseCommand):
    help = "Run one pass of the rollout engine: the code the Celery beat task runs."

    def handle(self, *args, **options):
        advanced = rollouts_advance_all()
        self.stdout.write(f"Advanced {advanced} rollout(s).")
