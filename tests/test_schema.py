"""What /api/schema/ says, point by point (tests/test_schemathesis.py checks
it against the running server as a whole)."""

import pytest


@pytest.fixture
def schema(client):
    response = client.get("/api/schema/?format=json")
    assert response.status_code == 200
    return response.json()


def _resolve(schema: dict, node: dict) -> dict:
    while "$ref" in node or ("allOf" in node and len(node["allOf"]) == 1):
        ref = node["$ref"] if "$ref" in node else node["allOf"][0]["$ref"]
        node = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return node


def _response(schema, path, method, status):
    return schema["paths"][path][method]["responses"][str(status)]


def test_it_documents_a_device_s_services_as_target_previous_and_last_report(schema):
    device = _resolve(schema, _response(schema, "/api/v1/devices/{uuid}/", "get", 200)["content"]["application/json"]["schema"])
    service = _resolve(schema, device["properties"]["services"]["additionalProperties"])
    assert set(service["properties"]) == {"target", "pinned", "previous", "reported"}
    assert service["properties"]["reported"]["nullable"] is True
    written = schema["components"]["schemas"]["DeviceRequest"]["properties"]["services"]
    assert set(_resolve(schema, written["additionalProperties"])["properties"]) == {"image", "tag", "digest"}


def test_it_documents_a_delivery_s_next_attempt_as_read_only_and_nullable(schema):
    delivery = schema["components"]["schemas"]["NotificationDelivery"]["properties"]
    assert delivery["next_attempt_at"]["readOnly"] is True
    assert delivery["next_attempt_at"]["nullable"] is True
    assert delivery["next_attempt_at"]["format"] == "date-time"


def test_it_marks_the_policy_and_fleet_of_a_rollout_nullable(schema):
    rollout = schema["components"]["schemas"]["Rollout"]["properties"]
    assert rollout["policy"]["nullable"] is True
    assert rollout["fleet"]["nullable"] is True


def test_it_documents_the_agent_endpoints_with_their_keys(schema):
    poll = schema["paths"]["/api/v1/device/{uuid}/state"]["get"]
    report = schema["paths"]["/api/v1/device/{uuid}/state"]["patch"]
    register = schema["paths"]["/api/v1/device/register"]["post"]
    assert poll["security"] == report["security"] == [{"deviceKey": []}]
    assert register["security"] == [{"provisioningKey": []}]
    assert {"200", "304", "401", "404"} <= set(poll["responses"])
    assert {"200", "400", "401", "404", "413"} <= set(report["responses"])
    assert {"201", "400", "401", "409", "413"} <= set(register["responses"])
    schemes = schema["components"]["securitySchemes"]
    assert schemes["deviceKey"]["scheme"] == schemes["provisioningKey"]["scheme"] == "bearer"


@pytest.mark.parametrize("action", ["start", "pause", "resume", "cancel", "rollback-all"])
def test_it_documents_409_on_rollout_actions(schema, action):
    responses = schema["paths"][f"/api/v1/rollouts/{{id}}/{action}/"]["post"]["responses"]
    assert {"200", "401", "403", "404", "409"} <= set(responses)


def test_it_documents_409_on_creating_a_fleet_whose_slug_is_taken(schema):
    responses = schema["paths"]["/api/v1/fleets/"]["post"]["responses"]
    assert {"201", "400", "401", "403", "409"} <= set(responses)
    assert responses["409"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}


@pytest.mark.parametrize("path", ["/api/v1/fleets/", "/api/v1/devices/", "/api/v1/image-policies/", "/api/v1/rollouts/"])
def test_it_documents_400_on_posts_and_404_past_the_last_page(schema, path):
    assert "400" in schema["paths"][path]["post"]["responses"]
    listing = schema["paths"][path]["get"]
    assert "404" in listing["responses"] and "page=0" in listing["responses"]["404"]["description"]
    page = next(p for p in listing["parameters"] if p["name"] == "page")
    assert page["schema"] == {"type": "integer", "minimum": 1}


def test_it_documents_filters_with_the_values_they_accept(schema):
    parameters = {p["name"]: p["schema"] for p in schema["paths"]["/api/v1/rollouts/"]["get"]["parameters"]}
    assert parameters["active"] == {"type": "boolean"}
    assert parameters["policy"] == {"type": "integer", "minimum": 1}
    assert "enum" in parameters["status"]
    devices = schema["paths"]["/api/v1/rollouts/{id}/devices/"]["get"]["parameters"]
    assert {p["name"] for p in devices if p["in"] == "query"} == {"status", "batch", "page", "page_size"}
