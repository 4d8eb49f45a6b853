"""The WSGI application gunicorn serves (Procfile: `gunicorn fleet.wsgi`).

Django, behind fleet.request_limits (bodies over their endpoint's limit are
answered 413 before Django reads them, and chunked bodies reach Django with
their length) and devices.fastpath (device polls answered without Django's
per-request machinery).
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleet.settings")
django_application = get_wsgi_application()

from devices.fastpath import PollFastPath  # noqa: E402 - needs the configured settings
from fleet.request_limits import RequestBodies  # noqa: E402
from fleet.startup import require_secret_key  # noqa: E402

require_secret_key()
application = RequestBodies(PollFastPath(django_application))
