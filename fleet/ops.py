"""Operations endpoints: liveness, readiness, Prometheus metrics."""

import logging

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache

from fleet.api import require_methods

from .metrics import render_metrics

logger = logging.getLogger(__name__)


@never_cache
@require_methods("GET", "HEAD")
def healthz(request: HttpRequest) -> JsonResponse:
    # Liveness: the process answers. No dependency is touched on purpose, so a
    # database outage does not get every web process restarted.
    return JsonResponse({"status": "ok"})


@never_cache
@require_methods("GET", "HEAD")
def readyz(request: HttpRequest) -> JsonResponse:
    checks = {"database": _database_ok(), "broker": _broker_ok()}
    down = [name for name, ok in checks.items() if not ok]
    if down:
        return JsonResponse(
            {
                "error": "not_ready",
                "detail": f"Unreachable: {', '.join(down)}.",
                "checks": {name: "ok" if ok else "down" for name, ok in checks.items()},
            },
            status=503,
        )
    return JsonResponse({"status": "ok", "checks": {name: "ok" for name in checks}})


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:  # any failure means "not ready"; the reason goes to the log
        logger.exception("readiness: database check failed")
        return False


def _broker_ok() -> bool:
    from fleet.celery import app

    try:
        # One attempt with a short connect timeout: kombu's retries sleep two
        # seconds before the second try, and a probe must answer quickly.
        with app.connection_for_write(connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=0)
        return True
    except Exception:  # any failure means "not ready"; the reason goes to the log
        logger.warning(
            "readiness: broker %s unreachable", _safe_url(app.conf.broker_url), exc_info=True
        )
        return False


def _safe_url(url: str) -> str:
    # Without the credentials, which may sit before the `@`.
    return url.split("@")[-1]


@require_methods("GET")
def metrics(request: HttpRequest) -> HttpResponse:
    body, content_type = render_metrics()
    return HttpResponse(body, content_type=content_type)
