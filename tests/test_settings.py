"""Settings as a fresh process sees them: production safety and start-up rules.

Each test runs manage.py in a subprocess, because settings are read once per
process and the test process itself runs with bin/test's overrides.
"""

import os
import secrets
import subprocess
import sys
from pathlib import Path

from django.conf import settings

# Overrides that bin/test (or a developer's shell) may export and that would
# change what a production process sees.
_LOCAL_OVERRIDES = ("SECRET_KEY", "DEBUG", "ALLOWED_HOSTS", "ENV_FILE")


def _manage_env() -> dict[str, str]:
    base = {
        name: value
        for name, value in os.environ.items()
        if name not in _LOCAL_OVERRIDES and not name.startswith(("SECURE_", "SESSION_", "CSRF_"))
    }
    # No .env either: a developer's bin/run writes one with DEBUG=true.
    base["ENV_FILE"] = ""
    return base


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=settings.BASE_DIR,
        env={**_manage_env(), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _production(**env: str) -> dict[str, str]:
    return {
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "fleet.example.com",
        **env,
    }


def test_it_passes_the_deploy_check_with_debug_off():
    result = _manage("check", "--deploy", "--fail-level", "WARNING", **_production())

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_it_leaves_the_https_redirect_to_deployments_behind_a_tls_proxy():
    script = (
        "from django.conf import settings as s; "
        "print(s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS > 0, s.SESSION_COOKIE_SECURE)"
    )
    plain = _manage("shell", "-c", script, **_production())
    proxied = _manage("shell", "-c", script, **_production(SECURE_SSL_REDIRECT="true"))

    assert plain.stdout.splitlines()[-1].split() == ["False", "True", "True"], plain.stderr
    assert proxied.stdout.splitlines()[-1].split() == ["True", "True", "True"], proxied.stderr


def test_it_reads_empty_registry_credentials_as_none():
    # compose passes `${REGISTRY_CREDENTIALS:-}` when the operator sets none.
    script = "from django.conf import settings as s; print(s.REGISTRY_CREDENTIALS)"
    result = _manage("shell", "-c", script, **_production(REGISTRY_CREDENTIALS=""))

    assert result.stdout.splitlines()[-1] == "{}", result.stderr


def test_it_fails_the_deploy_check_when_a_security_setting_is_weakened():
    # Proves the check above would catch a default that drifted.
    result = _manage(
        "check", "--deploy", "--fail-level", "WARNING", **_production(SECURE_HSTS_SECONDS="0")
    )

    assert result.returncode != 0
    assert "security.W004" in result.stdout + result.stderr


def test_it_refuses_to_serve_without_secret_key():
    result = subprocess.run(
        [sys.executable, "-c", "import fleet.wsgi"],
        cwd=settings.BASE_DIR,
        env={**_manage_env(), "DEBUG": "false"},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_it_checks_migrations_without_secret_key():
    # The command the developers' guide names, in a fresh checkout.
    result = _manage("makemigrations", "--check", "--dry-run", DEBUG="false")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "No changes detected" in result.stdout


def test_it_reads_secret_key_from_the_env_file(tmp_path: Path):
    env_file = tmp_path / "fleet.env"
    env_file.write_text(f"SECRET_KEY={secrets.token_urlsafe(50)}\nDEBUG=true\n")

    result = _manage("check", ENV_FILE=str(env_file))

    assert result.returncode == 0, result.stdout + result.stderr


def _python(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {script}"],
        cwd=settings.BASE_DIR,
        env={**os.environ, "ENV_FILE": "", "DJANGO_SETTINGS_MODULE": "fleet.settings"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _project_modules_named_by_rest_framework_settings() -> set[str]:
    names: set[str] = set()
    for value in settings.REST_FRAMEWORK.values():
        for path in value if isinstance(value, list) else [value]:
            if isinstance(path, str) and (settings.BASE_DIR / path.split(".")[0]).is_dir():
                names.add(path.rsplit(".", 1)[0])
    return names


def test_it_imports_each_module_the_rest_framework_settings_name_first():
    # Celery imports these before any view does; a module that imports
    # rest_framework.views at its top then loops back into the settings.
    modules = _project_modules_named_by_rest_framework_settings()
    assert "fleet.api" in modules

    for module in sorted(modules):
        result = _python(f"import {module}")

        assert result.returncode == 0, f"{module}: {result.stderr}"


def test_it_registers_every_task_the_beat_schedule_names():
    result = _python(
        "from fleet.celery import app; app.loader.import_default_modules(); "
        "missing = [e['task'] for e in django.conf.settings.CELERY_BEAT_SCHEDULE.values() "
        "if e['task'] not in app.tasks]; print('missing', missing)"
    )

    assert result.returncode == 0, result.stderr
    assert "missing []" in result.stdout
