import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleet.settings")
application = get_asgi_application()

from fleet.startup import require_secret_key  # noqa: E402 - needs the configured settings

require_secret_key()
