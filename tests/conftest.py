import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from .browser import browser, page, screenshot_dir  # noqa: F401 (fixtures of the browser tests)
from .factories import operator


@pytest.fixture(autouse=True)
def _clear_cache():
    # The cache is the real Redis (database 15 under bin/test); tests must not
    # see each other's throttle counters or cached state.
    cache.clear()
    yield


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings):
    # The default hasher costs ~0.4 s per user here; tests create many users.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _no_registry_by_default(settings):
    # Test images are named after Docker Hub: nothing may ask its real API.
    # Tests of digest resolution turn it on with `registry_settings`, which
    # points it at the local registry.
    settings.REGISTRY_RESOLVE_DIGESTS = False


@pytest.fixture(autouse=True)
def _presence_written_in_the_poll(settings):
    # Tests read last_seen_at right after a poll: write it in the poll, not
    # in the background a few seconds later (tests/test_presence.py covers
    # the buffer).
    settings.DEVICE_PRESENCE_FLUSH_SECONDS = 0


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def admin_api(db) -> APIClient:
    """An API client authenticated with a token of a superuser."""
    from django.contrib.auth.models import User
    from rest_framework.authtoken.models import Token

    user = User.objects.create_superuser("root", "root@example.com", "unused-password")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


@pytest.fixture
def make_operator(db):
    """Factory for API clients whose user has exactly the given permissions."""
    count = iter(range(1000))

    def make(*perms: str) -> APIClient:
        _, key = operator(*perms, username=f"operator-{next(count)}")
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
        return client

    return make


@pytest.fixture
def queued_tasks():
    """Tasks go to the real broker (Redis) instead of running on commit: the
    fan-out task is enqueued but no worker has taken it yet."""
    from fleet.celery import app as celery_app

    celery_app.conf.task_always_eager = False
    try:
        yield
    finally:
        celery_app.conf.task_always_eager = True
        celery_app.control.purge()


# The real registry (Debian's docker-registry) and its fronts: see tests/registry.py.
from .registry import auth_registry, registry, registry_front, registry_settings  # noqa: E402,F401
