"""`/` leads to the console; a 404 never lists the URL patterns in production."""

import pytest
from django.test import Client


def test_it_redirects_the_root_to_the_admin(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/admin/"


@pytest.mark.django_db
def test_it_answers_an_unknown_url_without_listing_the_urls(settings):
    settings.DEBUG = False
    response = Client().get("/no/such/page")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert b"admin/" not in response.content and b"api/v1" not in response.content
