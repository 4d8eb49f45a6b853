"""/api/schema/ tells the truth: schemathesis drives the running web process
(gunicorn, as the Procfile runs it) from the schema it serves, with every
check on (server errors, undocumented status codes and content types,
response bodies against their schemas, schema-violating input accepted,
schema-valid input refused, auth, ...), and finds nothing.

Bounded and repeatable: a fixed number of examples per operation, the
deterministic generation mode, one seed. The data the operations need (a
fleet, a device with its key, a policy, a rollout, a hook) exists before the
run, and the path parameters of most operations name it, so the examples
reach the views rather than a 404.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from devices.models import DeviceService, FleetMembership, Role
from notifications.models import NotificationHook
from rollouts.services import rollout_create_for_push

from . import processes
from .factories import DeviceFactory, FleetFactory, operator
from .rollout_helpers import IMAGE, policy

pytestmark = pytest.mark.django_db(transaction=True)

EXAMPLES_PER_OPERATION = 5
SEED = 15
# The whole run takes 70-110 s on the 2-core machine at load 5-7.
RUN_TIMEOUT_SECONDS = 600

# Operations whose input obeys rules JSON Schema cannot state: for these a
# schema-valid request may get 400 (with its reason in `detail`), and
# schemathesis' positive_data_acceptance check allows it. Every other check
# holds for them as for the rest; no operation accepts input of the wrong type.
RULES_BEYOND_THE_SCHEMA = {
    "GET /api/v1/devices/": "`image` is an image reference (grammar); `behind` needs `image`",
    "GET /api/v1/images/": "`image` is an image reference (grammar)",
    "GET /api/v1/rollouts/": "`image` is an image reference (grammar)",
    "GET /api/v1/events/stream": "`image` is an image reference (grammar)",
    "POST /api/v1/devices/": "images are references (grammar), digests sha256; the fleet must exist",
    "PUT /api/v1/devices/{uuid}/": "images are references (grammar), digests sha256",
    "PATCH /api/v1/devices/{uuid}/": "images are references (grammar), digests sha256",
    "POST /api/v1/devices/{uuid}/rollback/": "the service must exist; tags and digests have a grammar",
    "PATCH /api/v1/device/{uuid}/state": "images are references (grammar), digests sha256",
    "POST /api/v1/fleets/{fleet_slug}/members/": "the user must exist",
    "POST /api/v1/image-policies/": "pattern grammar, batch_percentages increasing to 100, window, fleet",
    "PUT /api/v1/image-policies/{id}/": "pattern grammar, batch_percentages increasing to 100, window, fleet",
    "PATCH /api/v1/image-policies/{id}/": "pattern grammar, batch_percentages increasing to 100, window, fleet",
    "POST /api/v1/notification-hooks/": "the URL's host must resolve to a public address",
    "PUT /api/v1/notification-hooks/{id}/": "the URL's host must resolve to a public address",
    "PATCH /api/v1/notification-hooks/{id}/": "the URL's host must resolve to a public address",
    "POST /api/v1/rollouts/": "image reference grammar; the policy must exist and match",
    "POST /api/v1/rollouts/preview/": "image reference grammar; the policy must exist and match",
    "POST /api/v1/webhooks/docker-registry": "the body must be one of the registries' shapes",
}
# Verdicts of schema-valid input: the default list, plus 400 for the above.
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429"]


def _world() -> dict:
    """What the operations act on; committed, since the server is another process."""
    admin, token = operator(username="schema-admin")
    User.objects.filter(pk=admin.pk).update(is_superuser=True, is_staff=True)
    fleet = FleetFactory(slug="schema")
    device = DeviceFactory(fleet=fleet)
    DeviceService.objects.create(
        device=device, name="web", target_image=IMAGE, target_tag="v1.0.0"
    )
    image_policy = policy(fleet=fleet)
    rollout = rollout_create_for_push(image=IMAGE, tag="v2.0.0", digest=None).rollout
    hook = NotificationHook.objects.create(url="https://hooks.example.com/fleet")
    member, _ = operator(username="schema-member")
    FleetMembership.objects.create(fleet=fleet, user=member, role=Role.VIEWER)
    return {
        "token": token,
        "fleet": fleet.slug,
        "provisioning_key": fleet.provisioning_key,
        "device": str(device.uuid),
        "device_key": device.api_key,
        "policy": image_policy.pk,
        "rollout": str(rollout.pk),
        "hook": hook.pk,
        "member": member.username,
    }


def _toml(value) -> str:
    return str(value) if isinstance(value, int) else f'"{value}"'


def _operation(path_regex: str, parameters: dict) -> str:
    """A TOML [[operations]] block fixing path parameters. DELETE and the
    key rotation are left out: they hit generated ids, so the shared data
    (and the provisioning key the register operation sends) stays."""
    values = ", ".join(f"{name} = {_toml(value)}" for name, value in parameters.items())
    return (
        "[[operations]]\n"
        f"include-path-regex = '{path_regex}'\n"
        "exclude-path-regex = 'rotate-key'\n"
        'exclude-method = "DELETE"\n'
        f"parameters = {{ {values} }}\n"
    )


def _config(base_url: str, world: dict) -> str:
    blocks = [
        f'base-url = "{base_url}"',
        f"seed = {SEED}",
        # One worker: with two, hypothesis describes filters by parsing
        # their source in both threads at once, which CPython 3.11's parser
        # can fail at ("AST constructor recursion depth mismatch").
        "workers = 1",
        "request-timeout = 10",
        # Other methods than the documented ones are tried on every path;
        # these two are enough to learn whether an unsupported one is a 405.
        "[phases.coverage]",
        'unexpected-methods = ["DELETE", "PATCH"]',
        "generate-duplicate-query-parameters = false",
        "[generation]",
        "deterministic = true",
        f"max-examples = {EXAMPLES_PER_OPERATION}",
        "[checks]",
        "enabled = true",
        "[auth.openapi.tokenAuth]",
        f'api_key = "Token {world["token"]}"',
        "[auth.openapi.deviceKey]",
        f'bearer = "{world["device_key"]}"',
        "[auth.openapi.provisioningKey]",
        f'bearer = "{world["provisioning_key"]}"',
        _operation(r"^/api/v1/device/\{uuid\}", {"uuid": world["device"]}),
        _operation(r"^/api/v1/devices/\{uuid\}", {"uuid": world["device"]}),
        _operation(r"^/api/v1/fleets/\{slug\}", {"slug": world["fleet"]}),
        _operation(
            r"^/api/v1/fleets/\{fleet_slug\}", {"fleet_slug": world["fleet"], "username": world["member"]}
        ),
        _operation(r"^/api/v1/image-policies/\{id\}", {"id": world["policy"]}),
        _operation(r"^/api/v1/rollouts/\{id\}", {"id": world["rollout"]}),
        _operation(r"^/api/v1/notification-hooks/\{id\}", {"id": world["hook"]}),
        # A stream never ends: each accepted request is read for a second
        # (keep-alives every second). The coverage phase's hundred-odd
        # boundary cases per stream would take a minute; fuzzing tries them.
        "[[operations]]\n"
        "include-path-regex = '/stream$'\n"
        "request-timeout = 1\n"
        "max-stream-events = 3\n"
        "phases.coverage.enabled = false\n",
    ]
    for label in RULES_BEYOND_THE_SCHEMA:
        method, path = label.split(" ", 1)
        statuses = ", ".join(f'"{status}"' for status in [*ACCEPTED, "400"])
        blocks.append(
            "[[operations]]\n"
            f'include-name = "{method} {path}"\n'
            f"checks.positive_data_acceptance.expected-statuses = [{statuses}]\n"
        )
    return "\n".join(blocks) + "\n"


def test_the_running_api_answers_as_its_schema_says(tmp_path):
    world = _world()
    env = {
        "EVENT_STREAM_KEEPALIVE_SECONDS": "1",
        "WEB_CONCURRENCY": "1",
    }
    with processes.web_process(tmp_path, **env) as base_url:
        config = tmp_path / "schemathesis.toml"
        config.write_text(_config(base_url, world))
        run = subprocess.run(
            [
                str(Path(sys.executable).parent / "st"),
                "--config-file",
                str(config),
                "run",
                f"{base_url}/api/schema/?format=json",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_SECONDS,
            cwd=tmp_path,
            env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
        )
    output = run.stdout + run.stderr
    (tmp_path / "schemathesis.txt").write_text(output)
    assert run.returncode == 0, output[-20000:]
    # Cases were generated and sent, and every one passed.
    cases = re.search(r"(\d+) generated, (\d+) passed", output)
    assert cases and int(cases[1]) > 1000 and cases[1] == cases[2], output[-5000:]
