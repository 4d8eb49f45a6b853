"""Settings, read from the environment (django-environ).

Every knob has a default that lets `bin/run` start the whole control plane on a
fresh machine (SQLite, and a SQLite-backed broker). Production sets DATABASE_URL,
REDIS_URL and SECRET_KEY; with DEBUG off the security settings default to the
values `manage.py check --deploy` asks for.
"""

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"
# The embedded database and broker and beat's schedule live here: a fresh
# checkout started straight from the Procfile must find it.
try:
    VAR_DIR.mkdir(exist_ok=True)
except OSError:  # a read-only checkout that keeps its state elsewhere
    pass

env = environ.Env()
# bin/run writes a .env with a generated SECRET_KEY; real deployments use the
# process environment, which wins over the file. ENV_FILE points elsewhere, and
# an empty ENV_FILE reads no file at all (bin/test does, so that a local .env
# written for the run command never leaks into the tests).
ENV_FILE = env.str("ENV_FILE", default=str(BASE_DIR / ".env"))
if ENV_FILE and Path(ENV_FILE).is_file():
    env.read_env(ENV_FILE)

DEBUG = env.bool("DEBUG", default=False)
# May be empty for commands that sign nothing (makemigrations, migrate,
# check); the web entry points refuse to start without it (fleet/wsgi.py).
SECRET_KEY = env.str("SECRET_KEY", default="")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "devices",
    "rollouts",
    "webhooks",
    "counters",
    "notifications",
    # After the apps: its admin module re-registers their models with the console's pages.
    "console",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Serves the device agent endpoints without the middleware below.
    "devices.middleware.AgentEndpointsMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "fleet.urls"
WSGI_APPLICATION = "fleet.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'fleet.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web, worker and beat share the file: WAL lets readers run beside the one
    # writer, IMMEDIATE takes the write lock at BEGIN so a transaction never
    # fails half-way with "database is locked", and the timeout makes the
    # others wait for it instead of erroring.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- Security: defaults are what `check --deploy` wants when DEBUG is off,
# except the https redirect. ---
# Opt-in: the contract's settings (section 5) must be enough to run, and
# device agents on a LAN and in-cluster probes speak plain http. A deployment
# whose TLS ends at a proxy sets it to true (the proxy sends X-Forwarded-Proto).
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Devices and registries talk plain JSON over the API; the health probes must
# answer over plain HTTP inside the cluster.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=not DEBUG)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
X_FRAME_OPTIONS = "DENY"
# security.W008 says the https redirect is off, which is our default on purpose
# (above); HSTS is still sent on every https answer.
SILENCED_SYSTEM_CHECKS = ["security.W008"]

# --- Product settings ---
DEVICE_POLL_INTERVAL_SECONDS = env.int("DEVICE_POLL_INTERVAL_SECONDS", default=60)
# A device counts as online while its last poll is younger than this many
# poll intervals (one missed poll is normal jitter, three is not).
DEVICE_ONLINE_POLL_INTERVALS = 3
# Polls record presence (last_seen_at) in a per-process buffer written every
# this many seconds in one statement (devices.presence); 0 writes in the poll.
DEVICE_PRESENCE_FLUSH_SECONDS = env.float("DEVICE_PRESENCE_FLUSH_SECONDS", default=5.0)
# The most services one device may have (reported or targeted); beyond, 400.
DEVICE_MAX_SERVICES = env.int("DEVICE_MAX_SERVICES", default=64)
# The largest body the agent endpoints read; beyond, 413 (fleet.request_limits).
# Every other endpoint: DATA_UPLOAD_MAX_MEMORY_SIZE, Django's 2.5 MiB.
DEVICE_MAX_BODY_BYTES = env.int("DEVICE_MAX_BODY_BYTES", default=256 * 1024)
# The device report's statements are prepared on PostgreSQL (devices.prepared);
# off behind a pooler in transaction mode that does not keep prepared statements.
DEVICE_PREPARED_STATEMENTS = env.bool("DEVICE_PREPARED_STATEMENTS", default=True)
ROLLOUT_TICK_SECONDS = env.int("ROLLOUT_TICK_SECONDS", default=15)
DOCKER_WEBHOOK_SECRET = env.str("DOCKER_WEBHOOK_SECRET", default="")
# Event streams send a comment this often when idle: the contract asks for at
# least every 15 s, and proxies commonly cut idle connections after 30-60 s.
EVENT_STREAM_KEEPALIVE_SECONDS = env.float("EVENT_STREAM_KEEPALIVE_SECONDS", default=10.0)
# /metrics names fleets, rollouts and images: with a token it needs
# `Authorization: Bearer <token>`; without one it answers loopback only.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")

# --- Registry HTTP API v2 (tag -> digest resolution, tag lists) ---
# {"<host[:port]>": {"username": "...", "password": "..."}}, as image names spell the host.
# Empty counts as unset (compose passes `${REGISTRY_CREDENTIALS:-}`).
REGISTRY_CREDENTIALS = env.json("REGISTRY_CREDENTIALS", default={}) if env.str(
    "REGISTRY_CREDENTIALS", default=""
).strip() else {}
if not isinstance(REGISTRY_CREDENTIALS, dict) or not all(
    isinstance(entry, dict) and {"username", "password"} <= entry.keys()
    for entry in REGISTRY_CREDENTIALS.values()
):
    raise ImproperlyConfigured(
        'REGISTRY_CREDENTIALS must be a JSON object {"<host>": {"username": ..., "password": ...}}.'
    )
# host:port reached over plain http (a registry on the local network, tests).
REGISTRY_INSECURE_HOSTS = env.list("REGISTRY_INSECURE_HOSTS", default=[])
REGISTRY_TIMEOUT_SECONDS = env.float("REGISTRY_TIMEOUT_SECONDS", default=10.0)
# Where the API of `docker.io` images is asked: Docker Hub's, or a
# pull-through mirror of it on a closed network.
REGISTRY_DOCKER_HUB_HOST = env.str("REGISTRY_DOCKER_HUB_HOST", default="registry-1.docker.io")
# A successful resolution is reused this long: many targets set without a
# digest at once (a bulk device import) ask the registry once, not per device.
REGISTRY_CACHE_SECONDS = env.int("REGISTRY_CACHE_SECONDS", default=5)

# False: never ask a registry (an air-gapped site); rollouts without a digest
# in the push go on by tag.
REGISTRY_RESOLVE_DIGESTS = env.bool("REGISTRY_RESOLVE_DIGESTS", default=True)

# Newest history rows kept per device and service (the contract's floor is 5).
# Period of the beat task that fills in digests still missing (devices/digests.py).
DIGEST_SWEEP_SECONDS = env.float("DIGEST_SWEEP_SECONDS", default=60.0)
DEVICE_HISTORY_KEEP = env.int("DEVICE_HISTORY_KEEP", default=10)
if DEVICE_HISTORY_KEEP < 5:
    raise ImproperlyConfigured("DEVICE_HISTORY_KEEP must be at least 5.")

# --- Celery ---
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
else:
    # Embedded broker: kombu's SQLAlchemy transport on a SQLite file beside
    # the database, so web, worker and beat need nothing but this checkout.
    # (kombu's filesystem transport was tried first: its reader can pick up
    # a message file before the writer has filled it, which kills the worker.)
    CELERY_BROKER_URL = f"sqla+sqlite:///{VAR_DIR / 'broker.sqlite3'}"
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Pool size of `celery worker` (the Procfile's worker); unset: one per CPU.
CELERY_WORKER_CONCURRENCY = env.int("CELERY_CONCURRENCY", default=None)
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# Beat's own scheduler, which reconnects after a failed publish (fleet/beat.py).
CELERY_BEAT_SCHEDULER = "fleet.beat.ReconnectingScheduler"
CELERY_BEAT_SCHEDULE = {
    "advance-rollouts": {
        "task": "rollouts.advance_rollouts",
        "schedule": float(ROLLOUT_TICK_SECONDS),
        # A tick that waited longer than one period is stale: the next one
        # does the same work, so drop it instead of piling ticks up.
        "options": {"expires": float(ROLLOUT_TICK_SECONDS)},
    },
    # A safety net: every commit that writes events already enqueues a pass.
    "dispatch-notifications": {
        "task": "notifications.dispatch_events",
        "schedule": 10.0,
        "options": {"expires": 10.0},
    },
    # Policies with poll_registry: each due one is polled under a lease
    # (rollouts/services/polling.py); the policy's interval is its own.
    "poll-registries": {
        "task": "rollouts.poll_registries",
        "schedule": 60.0,
        "options": {"expires": 60.0},
    },
    # Targets set without a digest whose per-device task gave up (the
    # registry was down for hours): filled in as soon as it answers.
    "sweep-target-digests": {
        "task": "devices.sweep_target_digests",
        "schedule": DIGEST_SWEEP_SECONDS,
        "options": {"expires": DIGEST_SWEEP_SECONDS},
    },
    # /metrics counts too before it answers; this keeps a quiet deployment's
    # backlog small.
    "count-rollout-events": {
        "task": "rollouts.count_events",
        "schedule": 60.0,
        "options": {"expires": 60.0},
    },
}

# --- Notification hooks ---
# Tests and private setups may point hooks at loopback or private addresses.
NOTIFICATION_ALLOW_PRIVATE_NETWORKS = env.bool("NOTIFICATION_ALLOW_PRIVATE_NETWORKS", default=False)
# Connect and read timeout of one delivery attempt: a receiver that never
# answers frees the worker after this long.
NOTIFICATION_TIMEOUT_SECONDS = env.float("NOTIFICATION_TIMEOUT_SECONDS", default=5.0)
# Retries after a failed attempt wait base, 2 x base, 4 x base, ...
NOTIFICATION_RETRY_BASE_SECONDS = env.float("NOTIFICATION_RETRY_BASE_SECONDS", default=10.0)
NOTIFICATION_MAX_RETRIES = env.int("NOTIFICATION_MAX_RETRIES", default=6)

# --- REST framework ---
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: its WWW-Authenticate header makes a missing login a 401.
        "fleet.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["fleet.permissions.ModelPermissions"],
    "DEFAULT_PAGINATION_CLASS": "fleet.api.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PARSER_CLASSES": ["fleet.api.JSONParser"],
    "EXCEPTION_HANDLER": "fleet.api.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "COERCE_DECIMAL_TO_STRING": False,
    "DEFAULT_THROTTLE_RATES": {"webhooks": env.str("WEBHOOK_THROTTLE_RATE", default="600/min")},
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Fleet rollout control plane",
    "DESCRIPTION": "Registries push, policies decide, devices poll and report.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Serve Swagger UI from our own static files: fleets often sit offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # Policies and rollouts share one strategy choice set: name it once.
    "ENUM_NAME_OVERRIDES": {
        "UpdateStrategyEnum": "rollouts.models.UpdateStrategy",
        # Events and notification hooks' `events` share the event types.
        "EventTypeEnum": "rollouts.models.EventType",
        "ServiceStatusEnum": "devices.models.ServiceStatus",
        "DeviceUpdateStrategyEnum": "devices.models.DeviceUpdateStrategy",
    },
    # What an operator writes and what they read are different shapes
    # (a device's services above all): one component for each direction.
    "COMPONENT_SPLIT_REQUEST": True,
    # The agent endpoints are plain Django views (devices.schema documents them).
    "PREPROCESSING_HOOKS": ["devices.schema.agent_endpoints"],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "devices.schema.agent_security_schemes",
        "fleet.schema.document_errors",
    ],
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}
