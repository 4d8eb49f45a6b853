"""The WSGI application gunicorn serves (Procfile: `gunicorn fleet.wsgi`).

Django, behind fleet.request_limits: bodies over their endpoint's limit are
answered 413 before Django reads them, and chunked bodies reach Django with
their length.
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleet.settings")
django_application = get_wsgi_application()

from fleet.request_limits import RequestBodies  # noqa: E402 - needs the configured settings
from fleet.startup import require_secret_key  # noqa: E402

require_secret_key()
application = RequestBodies(django_application)
