"""The agent endpoints on SQLite, the database bin/run uses by default: the
poll, report and presence statements have SQLite spellings of their own."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r'''
import json, uuid
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from django.test import Client
from devices import presence
from devices.models import Device, DeviceService
from devices.services import ServiceTarget, device_set_targets, fleet_create

fleet, key = fleet_create(slug="s", name="s")
client = Client(HTTP_HOST="127.0.0.1")
answer = client.post("/api/v1/device/register", data=json.dumps({"name": "pi", "tags": ["a"]}),
                     content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}")
assert answer.status_code == 201, answer.content
uuid_text, auth = answer.json()["uuid"], "Bearer " + answer.json()["api_key"]
device = Device.objects.get(uuid=uuid_text)
device_set_targets(device_id=device.pk, targets={"web": ServiceTarget("docker.io/library/nginx", "1.27")})
rollout = uuid.uuid4()
DeviceService.objects.filter(device=device).update(target_rollout_id=rollout)

poll = client.get(f"/api/v1/device/{uuid_text}/state", HTTP_AUTHORIZATION=auth)
assert poll.status_code == 200, poll.content
assert poll.json() == {"uuid": uuid_text, "target_version": 2, "poll_interval_seconds": 60,
    "services": {"web": {"image": "docker.io/library/nginx", "tag": "1.27", "digest": None,
                         "rollout_id": str(rollout), "update_strategy": "download-then-kill",
                         "stop_timeout_seconds": 10}}}, poll.json()
again = client.get(f"/api/v1/device/{uuid_text}/state", HTTP_AUTHORIZATION=auth,
                   HTTP_IF_NONE_MATCH=poll["ETag"])
assert again.status_code == 304
device.refresh_from_db()
assert device.last_seen_at is not None

body = {"target_version": 2, "services": {
    "web": {"image": "nginx", "tag": "1.27", "status": "running", "health": "healthy"},
    "db": {"status": "running"}}}
report = client.patch(f"/api/v1/device/{uuid_text}/state", data=json.dumps(body),
                      content_type="application/json", HTTP_AUTHORIZATION=auth)
assert report.status_code == 200, report.content
assert sorted(DeviceService.objects.filter(device=device).values_list(
    "name", "reported_tag", "reported_status", "reported_health")) == [
    ("db", None, "running", None), ("web", "1.27", "running", "healthy")]
device.refresh_from_db()
assert device.reported_target_version == 2 and device.last_report_at is not None

from django.conf import settings
settings.DEVICE_PRESENCE_FLUSH_SECONDS = 3600  # buffered; flushed by hand below
later = device.last_seen_at + __import__("datetime").timedelta(seconds=40)
presence.buffer.note(device.pk, later)
assert presence.buffer.flush() == 1
device.refresh_from_db()
assert device.last_seen_at == later
print("ok")
'''


def test_the_agent_endpoints_work_on_sqlite(tmp_path):
    # Only what the script needs, not the runner's environment.
    env = {
        "PATH": os.environ["PATH"],
        "REGISTRY_RESOLVE_DIGESTS": "false",
        "CELERY_TASK_ALWAYS_EAGER": "true",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'fleet.sqlite3'}",
        "REDIS_URL": "",
        "ENV_FILE": "",
        "SECRET_KEY": "sqlite-test-key",
        "DJANGO_SETTINGS_MODULE": "fleet.settings",
        "DEVICE_PRESENCE_FLUSH_SECONDS": "0",
        "PYTHONPATH": str(ROOT),
    }
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
