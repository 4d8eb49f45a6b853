"""Who may deliver a webhook: the HMAC, bearer and token proofs, and their refusal."""

import logging

import pytest
from django.apps import apps

from webhooks.models import WebhookDelivery
from webhooks.signatures import body_signature, verify_delivery

from .factories import WEBHOOK_FIXTURES as FIXTURES

URL = "/api/v1/webhooks/docker-registry"
SECRET = "It's a Secret to Everybody"


def verify(secret=SECRET, body=b"Hello, World!", signature=None, authorization=None, token=None):
    return verify_delivery(
        secret=secret, body=body, signature=signature, authorization=authorization, token=token
    )


def test_it_signs_githubs_published_test_vector():
    assert body_signature(SECRET, b"Hello, World!") == (
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    )


def test_it_accepts_githubs_test_vector_signature():
    signature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert verify(signature=signature).accepted


def test_it_refuses_a_signature_of_another_body():
    assert not verify(body=b"Hello, World?", signature=body_signature(SECRET, b"Hello, World!")).accepted


@pytest.mark.parametrize(
    "proof",
    [{"authorization": f"Bearer {SECRET}"}, {"authorization": f"bearer {SECRET}"}, {"token": SECRET}],
)
def test_it_accepts_the_secret_as_bearer_or_token(proof):
    assert verify(**proof).accepted


def test_it_accepts_one_good_proof_beside_bad_ones():
    verdict = verify(signature="sha256=00", authorization="Bearer nope", token=SECRET)
    assert (verdict.accepted, verdict.reason) == (True, "?token=")


def test_it_names_the_wrong_proofs_it_was_given():
    verdict = verify(signature="sha256=00", token="nope")
    assert (verdict.accepted, verdict.reason) == (False, "wrong X-Hub-Signature-256, ?token=")


def test_it_survives_non_ascii_and_surrogate_proofs():
    assert not verify(token="s\u00e9cret\ud800", authorization="Bearer \u00ff").accepted


def test_it_accepts_everything_without_a_secret():
    assert verify(secret="").accepted


def test_it_warns_at_start_when_no_secret_is_set(settings, caplog):
    settings.DOCKER_WEBHOOK_SECRET = ""
    with caplog.at_level(logging.WARNING, logger="webhooks.apps"):
        apps.get_app_config("webhooks").ready()
    assert "DOCKER_WEBHOOK_SECRET is not set" in caplog.text


def test_it_does_not_warn_at_start_with_a_secret(settings, caplog):
    settings.DOCKER_WEBHOOK_SECRET = SECRET
    with caplog.at_level(logging.WARNING, logger="webhooks.apps"):
        apps.get_app_config("webhooks").ready()
    assert caplog.text == ""


# --- the endpoint's authentication matrix ---

BODY = (FIXTURES / "quay-push.json").read_bytes()


@pytest.fixture
def secret(settings):
    settings.DOCKER_WEBHOOK_SECRET = SECRET
    return SECRET


def post(client, query="", **headers):
    return client.post(URL + query, BODY, content_type="application/json", headers=headers)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "headers"),
    [
        ("", {"X-Hub-Signature-256": body_signature(SECRET, BODY)}),
        ("", {"Authorization": f"Bearer {SECRET}"}),
        ("?token=It%27s%20a%20Secret%20to%20Everybody", {}),
    ],
    ids=["hmac", "bearer", "token"],
)
def test_it_accepts_a_delivery_with_a_good_proof(client, secret, query, headers):
    response = post(client, query, **headers)
    assert response.status_code == 202
    assert WebhookDelivery.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "headers"),
    [
        ("", {}),
        ("", {"X-Hub-Signature-256": body_signature("another secret", BODY)}),
        ("", {"X-Hub-Signature-256": body_signature(SECRET, BODY + b" ")}),
        ("", {"Authorization": "Bearer not-the-secret"}),
        ("", {"Authorization": f"Token {SECRET}"}),
        ("?token=not-the-secret", {}),
        ("?token=", {}),
    ],
    ids=["missing", "hmac-other-secret", "hmac-other-body", "bearer", "wrong-scheme", "token", "empty-token"],
)
def test_it_refuses_a_delivery_without_a_good_proof(client, secret, caplog, query, headers):
    with caplog.at_level(logging.WARNING, logger="webhooks.views"):
        response = post(client, query, **headers)
    assert response.status_code == 401
    assert response.json()["error"] == "not_authenticated"
    assert response["WWW-Authenticate"] == 'Bearer realm="webhooks"'
    assert WebhookDelivery.objects.count() == 0
    assert "Rejected webhook delivery from 127.0.0.1" in caplog.text


@pytest.mark.django_db
def test_it_accepts_a_delivery_without_proof_when_no_secret_is_set(client, settings):
    settings.DOCKER_WEBHOOK_SECRET = ""
    assert post(client).status_code == 202
