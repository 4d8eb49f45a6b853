from django.core.management.base import BaseCommand

from rollouts.counting import engine_tick_timed
from rollouts.services import rollouts_advance_all


class Command(BaseCommand):
    help = "Run one pass of the rollout engine: the code the Celery beat task runs."

    def handle(self, *args, **options):
        advanced = engine_tick_timed(rollouts_advance_all)
        self.stdout.write(f"Advanced {advanced} rollout(s).")
