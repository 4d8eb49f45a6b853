"""compose.yaml as a user runs it: every service present, each with a health
check, the app waiting for healthy dependencies and for the migrations.
(No Docker engine runs here; this reads the file as compose would.)"""

from pathlib import Path

import yaml

from .processes import CONTRACT_SETTINGS

COMPOSE = yaml.safe_load((Path(__file__).resolve().parents[1] / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
APP = ("web", "worker", "beat")


def test_it_defines_every_service_with_a_health_check():
    assert {"postgres", "redis", "migrate", *APP} <= set(SERVICES)
    for name in ("postgres", "redis", *APP):
        assert SERVICES[name]["healthcheck"]["test"], name


def test_it_starts_the_app_after_healthy_dependencies_and_the_migrations():
    for name in APP:
        depends = SERVICES[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["redis"]["condition"] == "service_healthy", name
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
    assert SERVICES["migrate"]["command"][-3:] == ["manage.py", "migrate", "--no-input"]


def test_it_runs_worker_and_beat_and_requires_a_secret_key():
    assert SERVICES["worker"]["command"][:4] == ["celery", "-A", "fleet", "worker"]
    assert SERVICES["beat"]["command"][:4] == ["celery", "-A", "fleet", "beat"]
    for name in APP:
        environment = SERVICES[name]["environment"]
        assert environment["SECRET_KEY"].startswith("${SECRET_KEY:?")
        assert environment["REDIS_URL"].startswith("redis://redis:")
        assert environment["DATABASE_URL"].startswith("postgres://")


def test_it_passes_every_setting_of_the_contract_to_the_app():
    for name in ("migrate", *APP):
        assert CONTRACT_SETTINGS <= set(SERVICES[name]["environment"]), (
            name, sorted(CONTRACT_SETTINGS - set(SERVICES[name]["environment"]))
        )


def test_it_passes_operators_settings_through_with_a_default():
    # `NAME: ${NAME:-default}`: what the operator exports reaches the app.
    environment = SERVICES["web"]["environment"]
    for name in CONTRACT_SETTINGS - {"DATABASE_URL", "REDIS_URL", "PORT"}:
        assert environment[name].startswith(("${" + name + ":-", "${" + name + ":?")), name
