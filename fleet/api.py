"""REST plumbing shared by every app: error bodies, JSON parsing, filters, pagination.

Every error the API answers has the body `{"error": <code>, "detail": <sentence>}`
(plus `fields` for validation errors), whether it comes from DRF, from Django's
URL resolver or from a plain view.
"""

from collections.abc import Mapping
from functools import wraps

import django_filters
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django import forms
from django.db import models
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from django.http import JsonResponse
from rest_framework import exceptions, pagination, parsers, serializers
from rest_framework.fields import empty

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


# --- JSON types, strictly ---
# The API parses JSON only, so a value's JSON type is what the client meant:
# DRF's fields coerce ("7" to 7, 5 to "5", "true" to True), which turns a
# client's mistake into stored data. The schema says the types; these checks
# hold the input to them before DRF's fields see it.

_STRING_FIELDS = (
    serializers.CharField,
    serializers.UUIDField,
    serializers.DateTimeField,
    serializers.DateField,
    serializers.TimeField,
    serializers.DurationField,
    serializers.SlugRelatedField,
)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _json_kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    if _is_number(value):
        return "number"
    return "array" if isinstance(value, list) else "object"


def _pk_is_integer(field: serializers.PrimaryKeyRelatedField) -> bool:
    queryset = field.get_queryset() if field.queryset is not None else None
    pk = queryset.model._meta.pk if queryset is not None else None
    return isinstance(pk, (models.AutoField, models.BigAutoField, models.IntegerField))


def _type_error(field, value):
    """The error for a value of the wrong JSON type for `field`, or None.
    Nested serializers, lists and dicts are checked item by item."""
    if value is None or value is empty:
        return None  # allow_null and required are the field's own business
    expected = None
    if isinstance(field, serializers.BooleanField):
        expected = "boolean" if not isinstance(value, bool) else None
    elif isinstance(field, serializers.IntegerField):
        expected = "integer" if not (isinstance(value, int) and _is_number(value)) else None
    elif isinstance(field, (serializers.FloatField, serializers.DecimalField)):
        expected = "number" if not _is_number(value) else None
    elif isinstance(field, serializers.MultipleChoiceField):
        expected = "array" if not isinstance(value, list) else None
    elif isinstance(field, serializers.ChoiceField):
        if all(isinstance(choice, str) for choice in field.choices):
            expected = "string" if not isinstance(value, str) else None
    elif isinstance(field, _STRING_FIELDS):
        expected = "string" if not isinstance(value, str) else None
    elif isinstance(field, serializers.PrimaryKeyRelatedField):
        if _pk_is_integer(field):
            expected = "integer" if not (isinstance(value, int) and _is_number(value)) else None
    elif isinstance(field, serializers.ListSerializer) and isinstance(value, list):
        return _nested_errors(field.child, enumerate(value))
    elif isinstance(field, serializers.ListField) and isinstance(value, list):
        return _nested_errors(field.child, enumerate(value))
    elif isinstance(field, serializers.DictField) and isinstance(value, Mapping):
        return _nested_errors(field.child, value.items())
    elif isinstance(field, serializers.Serializer) and isinstance(value, Mapping):
        return type_errors(field, value)
    if expected is None:
        return None
    return [f"Must be a JSON {expected}, not {_json_kind(value)}."]


def _nested_errors(child, items):
    errors = {}
    for key, item in items:
        error = _type_error(child, item)
        if error:
            errors[key] = error
    return errors or None


def type_errors(serializer: serializers.Serializer, data: Mapping) -> dict:
    """Per writable field of `serializer`, the JSON type errors of `data`."""
    errors = {}
    for field in serializer._writable_fields:
        error = _type_error(field, field.get_value(data))
        if error:
            errors[field.field_name] = error
    return errors


class StrictJSONTypes:
    """Serializer mixin: a value of the wrong JSON type is a 400 (`"name":
    12`, `"max_failure_rate": "0.2"`, `"enabled": "yes"`), for the
    serializer's fields and those of the serializers nested in it."""

    def to_internal_value(self, data):
        if isinstance(data, Mapping):
            errors = type_errors(self, data)
            if errors:
                raise exceptions.ValidationError(errors)
        return super().to_internal_value(data)


@extend_schema_field(OpenApiTypes.BOOL)
class StrictBooleanFilter(django_filters.TypedChoiceFilter):
    """`true` or `false`, and a 400 for anything else: django-filter's
    BooleanFilter ignores a value it cannot read, so a typo like `?online=yes`
    would silently list everything."""

    def __init__(self, **kwargs):
        kwargs.setdefault("choices", [("true", "true"), ("false", "false")])
        kwargs.setdefault("coerce", lambda value: value == "true")
        super().__init__(**kwargs)


@extend_schema_field({"type": "integer", "minimum": 1})
class IdFilter(django_filters.NumberFilter):
    """A positive whole number (an id, a batch): `?policy=1.5` is a 400, not
    a filter on 1.5."""

    field_class = forms.IntegerField

    def __init__(self, **kwargs):
        kwargs.setdefault("min_value", 1)
        super().__init__(**kwargs)


class Pagination(pagination.PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 1000

    def get_page_size(self, request):
        # DRF falls back to the default for a page_size it cannot read; a
        # client that asked for `page_size=abc` should hear about it.
        value = request.query_params.get(self.page_size_query_param)
        if value is not None and not (value.isascii() and value.isdigit() and int(value) >= 1):
            raise exceptions.ValidationError(
                {self.page_size_query_param: ["A whole number of at least 1."]}
            )
        return super().get_page_size(request)


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
