"""ComposeDriver against a fake `docker` first on PATH.

The fake logs its argv, answers `compose ps` with the ids of its canned
containers and `inspect` with their canned `docker inspect` JSON, and fails
the compose verb named in FAKE_DOCKER_FAIL.
"""

import json
import os
import sys
import textwrap
from dataclasses import replace

import pytest
import yaml

from agent.client import AgentClient
from agent.drivers import DriverError
from agent.drivers.compose import ComposeDriver, split_reference
from agent.loop import Agent
from agent.model import InvalidTarget, ServiceState, ServiceTarget, Target
from devices.models import Device, DeviceService
from devices.services import ServiceTarget as DeviceTarget
from devices.services import device_set_targets
from tests.factories import FleetFactory

WEB = ServiceTarget("docker.io/iotistic/myapp", "v2.0.1", "sha256:" + "9f86d081" * 8, "r-1")
DB = ServiceTarget("docker.io/library/postgres", "16")

FAKE_DOCKER = """\
#!{python}
import json, os, sys

args = sys.argv[1:]
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
with open(os.environ["FAKE_DOCKER_CONTAINERS"]) as f:
    containers = json.load(f)
if args[0] == "compose":
    verb = [a for i, a in enumerate(args[1:]) if args[i] not in ("-f", "-p") and a[0] != "-"][0]
    if verb == os.environ.get("FAKE_DOCKER_FAIL"):
        sys.stderr.write("Error response from daemon: manifest unknown\\n")
        sys.exit(1)
    if verb == "ps":
        print("\\n".join(c["Id"] for c in containers))
elif args[0] == "inspect":
    print(json.dumps([c for c in containers if c["Id"] in args[1:]]))
elif args[0] == "image":
    if os.environ.get("FAKE_DOCKER_FAIL") == "image":
        sys.stderr.write("Error response from daemon: image is being used\\n")
        sys.exit(1)
else:
    sys.exit(2)
"""


def container(service, image, status="running", health=None, cid=None):
    state = {"Status": status}
    if health:
        state["Health"] = {"Status": health}
    return {
        "Id": cid or f"c-{service}",
        "State": state,
        "Config": {"Image": image, "Labels": {"com.docker.compose.service": service}},
    }


class FakeDocker:
    def __init__(self, directory):
        self.log_file = directory / "docker.log"
        self.containers_file = directory / "containers.json"
        self.set_containers([])

    def set_containers(self, containers):
        self.containers_file.write_text(json.dumps(containers))

    def calls(self):
        if not self.log_file.exists():
            return []
        return [json.loads(line) for line in self.log_file.read_text().splitlines()]


@pytest.fixture
def docker(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "docker"
    script.write_text(FAKE_DOCKER.format(python=sys.executable))
    script.chmod(0o755)
    fake = FakeDocker(tmp_path)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(fake.log_file))
    monkeypatch.setenv("FAKE_DOCKER_CONTAINERS", str(fake.containers_file))
    return fake


@pytest.fixture
def driver(tmp_path):
    base = tmp_path / "compose.yaml"
    base.write_text(textwrap.dedent("""\
        services:
          web: {image: "iotistic/myapp:v1"}
          db: {image: "postgres:15"}
        """))
    return ComposeDriver(compose_files=[base], override_file=tmp_path / "override.yml")


def compose(driver, *args):
    base = str(driver.override_file.with_name("compose.yaml"))
    return ["compose", "-f", base, "-f", str(driver.override_file), *args]


def test_it_pins_each_service_by_digest_in_the_override_file(docker, driver):
    driver.apply({"web": WEB, "db": DB})

    assert yaml.safe_load(driver.override_file.read_text()) == {
        "services": {
            "web": {
                "image": f"docker.io/iotistic/myapp:v2.0.1@{WEB.digest}",
                "stop_grace_period": "10s",
            },
            "db": {"image": "docker.io/library/postgres:16", "stop_grace_period": "10s"},
        }
    }


def test_it_pulls_then_starts_then_inspects(docker, driver):
    docker.set_containers([container("web", WEB.reference), container("db", DB.reference)])

    driver.apply({"web": WEB, "db": DB})
    driver.observe()

    assert docker.calls() == [
        compose(driver, "pull", "db", "web"),
        compose(driver, "up", "-d"),
        compose(driver, "ps", "--all", "--quiet"),
        ["inspect", "c-web", "c-db"],
    ]


OLD_WEB = "docker.io/iotistic/myapp:v1"


def test_it_pulls_before_the_old_container_is_replaced_with_download_then_kill(docker, driver):
    docker.set_containers([container("web", OLD_WEB)])

    driver.apply({"web": WEB})

    # No stop of its own: `up` replaces the container once the image is there.
    assert docker.calls() == [compose(driver, "pull", "web"), compose(driver, "up", "-d")]


def test_it_stops_the_old_container_before_pulling_with_kill_then_download(docker, driver):
    docker.set_containers([container("web", OLD_WEB), container("db", DB.reference)])
    web = replace(WEB, update_strategy="kill-then-download", stop_timeout_seconds=45)

    driver.apply({"web": web, "db": DB})

    assert docker.calls() == [
        compose(driver, "ps", "--all", "--quiet"),
        ["inspect", "c-web", "c-db"],
        compose(driver, "stop", "--timeout", "45", "web"),
        compose(driver, "pull", "db", "web"),
        compose(driver, "up", "-d"),
    ]
    override = yaml.safe_load(driver.override_file.read_text())["services"]
    assert override["web"]["stop_grace_period"] == "45s"


def test_it_removes_the_old_container_and_image_before_pulling_with_delete_then_download(
    docker, driver
):
    docker.set_containers([container("web", OLD_WEB)])
    web = replace(WEB, update_strategy="delete-then-download", stop_timeout_seconds=0)

    driver.apply({"web": web})

    assert docker.calls() == [
        compose(driver, "ps", "--all", "--quiet"),
        ["inspect", "c-web"],
        compose(driver, "stop", "--timeout", "0", "web"),
        compose(driver, "rm", "--force", "web"),
        ["image", "rm", OLD_WEB],
        compose(driver, "pull", "web"),
        compose(driver, "up", "-d"),
    ]


def test_it_groups_stops_by_timeout(docker, driver):
    docker.set_containers([container("web", OLD_WEB), container("db", "postgres:15")])
    targets = {
        "web": replace(WEB, update_strategy="kill-then-download", stop_timeout_seconds=5),
        "db": replace(DB, update_strategy="kill-then-download", stop_timeout_seconds=60),
    }

    driver.apply(targets)

    stops = [call[-3:] for call in docker.calls() if "stop" in call]
    assert stops == [["--timeout", "5", "web"], ["--timeout", "60", "db"]]


def test_it_does_not_stop_a_service_that_already_runs_its_target(docker, driver):
    docker.set_containers([container("web", WEB.reference)])
    web = replace(WEB, update_strategy="delete-then-download")

    driver.apply({"web": web})

    assert [call for call in docker.calls() if "stop" in call or "rm" in call] == []


def test_it_goes_on_when_the_old_image_cannot_be_removed(docker, driver, monkeypatch):
    monkeypatch.setenv("FAKE_DOCKER_FAIL", "image")
    docker.set_containers([container("web", OLD_WEB)])

    driver.apply({"web": replace(WEB, update_strategy="delete-then-download")})

    assert docker.calls()[-2:] == [compose(driver, "pull", "web"), compose(driver, "up", "-d")]


def test_it_reads_the_update_strategy_and_stop_timeout_from_the_polled_state():
    target = Target.from_json(
        {
            "target_version": 3,
            "services": {
                "web": {"image": WEB.image, "tag": "v2", "digest": None, "rollout_id": None,
                        "update_strategy": "kill-then-download", "stop_timeout_seconds": 30},
                "db": {"image": DB.image, "tag": "16"},
            },
        }
    )

    assert (target.services["web"].update_strategy, target.services["web"].stop_timeout_seconds) == (
        "kill-then-download",
        30,
    )
    # An older server sends neither: the defaults of CONTRACT section 8.
    assert (target.services["db"].update_strategy, target.services["db"].stop_timeout_seconds) == (
        "download-then-kill",
        10,
    )


@pytest.mark.parametrize("timeout", [-1, "10", 1.5, True])
def test_it_refuses_a_stop_timeout_that_is_not_a_whole_number(timeout):
    with pytest.raises(InvalidTarget):
        ServiceTarget.from_json({"image": "x", "stop_timeout_seconds": timeout})


def test_it_maps_docker_state_and_health_to_the_contract(docker, driver):
    targets = {
        name: ServiceTarget(f"docker.io/iotistic/{name}", "v2")
        for name in ("healthy", "unhealthy", "starting", "nocheck", "exited", "looping", "created")
    }
    docker.set_containers(
        [
            container("healthy", targets["healthy"].reference, health="healthy"),
            container("unhealthy", targets["unhealthy"].reference, health="unhealthy"),
            container("starting", targets["starting"].reference, health="starting"),
            container("nocheck", targets["nocheck"].reference),
            container("exited", targets["exited"].reference, status="exited"),
            container("looping", targets["looping"].reference, status="restarting"),
            container("created", targets["created"].reference, status="created"),
        ]
    )
    driver.apply(targets)

    observed = {name: (s.status, s.health) for name, s in driver.observe().items()}

    assert observed == {
        "healthy": ("running", "healthy"),
        "unhealthy": ("running", "unhealthy"),
        "starting": ("running", "starting"),
        "nocheck": ("running", "none"),
        "exited": ("exited", "none"),
        "looping": ("exited", "none"),
        "created": ("installing", "none"),
    }


def test_it_reports_the_pinned_release_it_runs(docker, driver):
    docker.set_containers([container("web", WEB.reference, health="healthy")])
    driver.apply({"web": WEB})

    assert driver.observe() == {
        "web": ServiceState(WEB.image, WEB.tag, WEB.digest, status="running", health="healthy")
    }


def test_it_reports_what_an_old_container_still_runs(docker, driver):
    old = "registry.local:5000/iotistic/myapp"
    docker.set_containers([container("web", f"{old}:v1")])
    driver.adopt({"web": WEB})

    state = driver.observe()["web"]

    assert (state.image, state.tag, state.digest) == (old, "v1", None)


def test_it_lets_the_worst_replica_speak_for_the_service(docker, driver):
    docker.set_containers(
        [
            container("web", WEB.reference, health="healthy", cid="c-web-1"),
            container("web", WEB.reference, status="exited", cid="c-web-2"),
        ]
    )
    driver.adopt({"web": WEB})

    assert driver.observe()["web"].status == "exited"


def test_it_reports_a_targeted_service_without_container_as_failed(docker, driver):
    driver.adopt({"web": WEB})

    assert driver.observe()["web"] == ServiceState.of(WEB, status="failed", health="none")
    assert ["inspect"] not in [call[:1] for call in docker.calls()]


def test_it_does_not_start_anything_and_reports_failed_when_the_pull_fails(
    docker, driver, monkeypatch
):
    monkeypatch.setenv("FAKE_DOCKER_FAIL", "pull")
    docker.set_containers([container("web", "docker.io/iotistic/myapp:v1")])

    with pytest.raises(DriverError, match="manifest unknown"):
        driver.apply({"web": WEB})

    assert [call[-2:] for call in docker.calls()] == [["pull", "web"]]
    assert driver.observe()["web"] == ServiceState.of(WEB, status="failed", health="none")


def test_it_recovers_from_a_failed_apply_on_the_next_one(docker, driver, monkeypatch):
    monkeypatch.setenv("FAKE_DOCKER_FAIL", "up")
    with pytest.raises(DriverError):
        driver.apply({"web": WEB})
    monkeypatch.delenv("FAKE_DOCKER_FAIL")
    docker.set_containers([container("web", WEB.reference, health="healthy")])

    driver.apply({"web": WEB})

    assert driver.observe()["web"].health == "healthy"


def test_it_says_so_when_docker_is_not_installed(driver, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))

    with pytest.raises(DriverError, match="not installed"):
        driver.apply({"web": WEB})


def test_it_writes_an_empty_override_when_nothing_is_targeted(docker, driver):
    driver.apply({})

    assert yaml.safe_load(driver.override_file.read_text()) == {"services": {}}
    assert [call[-2:] for call in docker.calls()] == [["up", "-d"]]


@pytest.mark.parametrize(
    ("reference", "parts"),
    [
        ("docker.io/library/nginx", ("docker.io/library/nginx", None, None)),
        ("nginx:1.25", ("nginx", "1.25", None)),
        ("localhost:5000/app", ("localhost:5000/app", None, None)),
        ("localhost:5000/app:v1@sha256:ab", ("localhost:5000/app", "v1", "sha256:ab")),
    ],
)
def test_it_splits_a_reference_into_repository_tag_and_digest(reference, parts):
    assert split_reference(reference) == parts


@pytest.mark.django_db(transaction=True)
def test_it_reports_a_failed_pull_to_the_server_and_retries_it(
    docker, driver, live_server, monkeypatch, tmp_path
):
    fleet = FleetFactory()
    client = AgentClient(live_server.url)
    agent = Agent(
        client=client,
        driver=driver,
        state_file=tmp_path / "state.json",
        provisioning_key=fleet.provisioning_key,
        sleep=lambda seconds: None,
    )
    agent.step()
    device = Device.objects.get(fleet=fleet)
    device_set_targets(
        device_id=device.id, targets={"web": DeviceTarget(WEB.image, WEB.tag, WEB.digest)}
    )
    monkeypatch.setenv("FAKE_DOCKER_FAIL", "pull")

    agent.step()

    row = DeviceService.objects.get(device=device, name="web")
    assert (row.reported_digest, row.reported_status) == (WEB.digest, "failed")
    assert agent.state.applied_target_version == 1

    monkeypatch.delenv("FAKE_DOCKER_FAIL")
    docker.set_containers([container("web", WEB.reference, health="healthy")])
    agent.step()
    client.close()

    row.refresh_from_db()
    assert (row.reported_status, row.reported_health) == ("running", "healthy")
    assert agent.state.applied_target_version == 2
    assert [c[-2:] for c in docker.calls() if c[0] == "compose"].count(["pull", "web"]) == 2
