"""What /api/schema/ says beyond what drf-spectacular reads from the views:
the error answers every operation can give, and pagination's bounds.

The schema is tested against the running server by schemathesis
(tests/test_schemathesis.py): an answer it does not document is a failure.
"""

import re

ERROR_SCHEMA = {
    "type": "object",
    "description": "Every error answer: a machine code and a human sentence.",
    "properties": {
        "error": {"type": "string", "description": "Machine code, e.g. `invalid`, `not_found`."},
        "detail": {"type": "string", "description": "What went wrong, for a person."},
        "fields": {
            "type": "object",
            "description": "Validation errors per field (400 `invalid` only).",
            "additionalProperties": True,
        },
    },
    "required": ["error", "detail"],
}
ERROR_REF = {"$ref": "#/components/schemas/Error"}

WHY = {
    400: "The request is malformed: a body or query parameter of the wrong type or out of range.",
    401: "No credentials, or unknown ones.",
    403: "The credentials lack the permission (or fleet role) this needs.",
    404: "No such object, or one outside the caller's fleets; for a list, a page past the last (`?page=0` included).",
    409: "The object's current state forbids it (for a rollout action: `invalid_transition`).",
    413: "The body is over this endpoint's size limit.",
}

# An operator's credentials: a user with permissions (and fleet roles).
OPERATOR_SCHEMES = {"tokenAuth", "cookieAuth"}

# Operations that answer 409 besides those that declare it themselves.
CONFLICTS = [
    re.compile(r"^post /api/v1/rollouts/\{id\}/[a-z-]+/?$"),
    re.compile(r"^post /api/v1/fleets/?$"),
    re.compile(r"^delete /api/v1/fleets/\{slug\}/?$"),
    re.compile(r"^post /api/v1/fleets/\{fleet_slug\}/members/?$"),
    re.compile(r"^post /api/v1/devices/?$"),
]


def _documents(operation: dict, code: int) -> bool:
    return str(code) in operation.get("responses", {})


def _error_codes(path: str, method: str, operation: dict) -> list[int]:
    codes = []
    has_body = "requestBody" in operation
    has_query = any(p.get("in") == "query" for p in operation.get("parameters", []))
    is_list = any(p.get("name") == "page" for p in operation.get("parameters", []))
    if has_body or has_query:
        codes.append(400)
    schemes = {name for requirement in operation.get("security", []) for name in requirement}
    if schemes:
        codes.append(401)
    if schemes & OPERATOR_SCHEMES:
        codes.append(403)
    if "{" in path or is_list:
        codes.append(404)
    if any(pattern.match(f"{method} {path}") for pattern in CONFLICTS):
        codes.append(409)
    if has_body:
        codes.append(413)
    return codes


def _bound_pagination(operation: dict) -> None:
    for parameter in operation.get("parameters", []):
        if parameter.get("in") != "query":
            continue
        if parameter["name"] == "page":
            parameter["schema"] = {"type": "integer", "minimum": 1}
        elif parameter["name"] == "page_size":
            parameter["schema"] = {"type": "integer", "minimum": 1}
            parameter["description"] = "Results per page; above 1000 gives 1000."


def document_errors(result, generator, request, public):
    """drf-spectacular postprocessing hook: every operation documents the
    error answers it can give, with the one error body."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    for path, methods in result.get("paths", {}).items():
        for method, operation in methods.items():
            _bound_pagination(operation)
            responses = operation.setdefault("responses", {})
            for code in _error_codes(path, method, operation):
                if not _documents(operation, code):
                    responses[str(code)] = {
                        "description": WHY[code],
                        "content": {"application/json": {"schema": ERROR_REF}},
                    }
    return result
