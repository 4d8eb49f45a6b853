"""REST plumbing shared by every app: error bodies, JSON parsing, filters, pagination.

Every error the API answers has the body `{"error": <code>, "detail": <sentence>}`
(plus `fields` for validation errors), whether it comes from DRF, from Django's
URL resolver or from a plain view.
"""

from functools import wraps

import django_filters
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse
from rest_framework import exceptions, pagination, parsers

from .request_limits import too_large_detail


def json_error(status: int, error: str, detail: str, **extra) -> JsonResponse:
    return JsonResponse({"error": error, "detail": detail, **extra}, status=status)


class Conflict(exceptions.APIException):
    """409 with a machine code, e.g. `invalid_transition`."""

    status_code = 409
    default_code = "conflict"
    default_detail = "The request conflicts with the current state."

    def __init__(self, detail: str, code: str = "conflict"):
        super().__init__(detail=detail, code=code)


class BadRequest(exceptions.APIException):
    """400 with a machine code other than `invalid`, e.g. `unknown_service`."""

    status_code = 400
    default_code = "bad_request"
    default_detail = "The request cannot be carried out."

    def __init__(self, detail: str, code: str = "bad_request"):
        super().__init__(detail=detail, code=code)


def first_error_message(data) -> str:
    """The first human sentence in DRF's nested error structure."""
    if isinstance(data, dict):
        for key, value in data.items():
            message = first_error_message(value)
            return message if key == "non_field_errors" else f"{key}: {message}"
    if isinstance(data, list) and data:
        return first_error_message(data[0])
    return str(data)


def exception_handler(exc, context):
    # Imported here, not at the top: rest_framework.views reads
    # DEFAULT_PARSER_CLASSES, which names this module, on first import; a
    # process that imports this module first (the Celery worker) would loop.
    from rest_framework.views import exception_handler as drf_exception_handler

    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        fields = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        response.data = {
            "error": "invalid",
            "detail": first_error_message(exc.detail),
            "fields": fields,
        }
        return response
    code = "not_found" if response.status_code == 404 else _code_of(exc)
    detail = getattr(exc, "detail", None) or str(exc) or "Not found."
    response.data = {"error": code, "detail": str(detail)}
    return response


def _code_of(exc) -> str:
    detail = getattr(exc, "detail", None)
    code = getattr(detail, "code", None) or getattr(exc, "default_code", None)
    return str(code or "error")


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, but a body nested thousands of levels deep is a 400:
    the C decoder raises RecursionError, which DRF would let become a 500."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError as exc:
            raise exceptions.ParseError("JSON parse error - the body is nested too deeply.") from exc


class StrictBooleanFilter(django_filters.TypedChoiceFilter):
    """`true` or `false`, and a 400 for anything else: django-filter's
    BooleanFilter ignores a value it cannot read, so a typo like `?online=yes`
    would silently list everything."""

    def __init__(self, **kwargs):
        kwargs.setdefault("choices", [("true", "true"), ("false", "false")])
        kwargs.setdefault("coerce", lambda value: value == "true")
        super().__init__(**kwargs)


class Pagination(pagination.PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 1000


# Django-level handlers: requests that never reach a DRF view still get the
# same error body.
def handler400(request, exception=None):
    if isinstance(exception, RequestDataTooBig):
        # Behind fleet.wsgi such a body never gets here (fleet.request_limits);
        # other entry points (runserver, the test client) answer the same.
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return json_error(413, "too_large", too_large_detail(limit))
    return json_error(400, "bad_request", "The request could not be understood.")


def handler403(request, exception=None):
    return json_error(403, "permission_denied", "You do not have permission for this.")


def handler404(request, exception=None):
    return json_error(404, "not_found", f"No resource at {request.path}.")


def handler500(request):
    return json_error(500, "server_error", "Internal error; it has been logged.")


def require_methods(*methods: str):
    """Like Django's require_http_methods, but the 405 has our JSON error body."""

    def decorator(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if request.method not in methods:
                response = json_error(
                    405, "method_not_allowed", f"Method {request.method} is not allowed here."
                )
                response["Allow"] = ", ".join(methods)
                return response
            return view(request, *args, **kwargs)

        return wrapper

    return decorator
