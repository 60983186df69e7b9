"""API tokens (hashed, expiring, revoked with the password), 401 for anonymous calls, and a
Content-Security-Policy that every page passes without inline script or style."""

import re
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from django.utils import timezone
from knox.models import AuthToken
from rest_framework.test import APIClient

from cells import intake

pytestmark = pytest.mark.django_db


def _token(password: str = "owner-password") -> str:
    response = APIClient().post("/api/token/", {"username": "owner", "password": password})
    assert response.status_code == 200, response.content
    return response.json()["token"]


def _jobs_status(token: str) -> int:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client.get("/api/jobs/").status_code


def test_anonymous_api_call_gets_401_with_the_token_scheme():
    response = APIClient().get("/api/jobs/")
    assert (response.status_code, response["WWW-Authenticate"]) == (401, "Token")


def test_api_token_is_stored_hashed_and_works_until_it_expires(owner):
    token = _token()
    stored = AuthToken.objects.get(user=owner)
    assert token not in (stored.digest, stored.token_key) and stored.expiry > timezone.now() + timedelta(days=29)
    assert _jobs_status(token) == 200
    AuthToken.objects.filter(pk=stored.pk).update(expiry=timezone.now() - timedelta(seconds=1))
    assert _jobs_status(token) == 401


def test_each_token_request_makes_another_working_token(owner):
    first, second = _token(), _token()
    assert first != second and (_jobs_status(first), _jobs_status(second)) == (200, 200)


def test_changing_the_password_revokes_every_api_token(owner, client):
    tokens = [_token(), _token()]
    client.force_login(owner)
    response = client.post(
        "/accounts/password/",
        {
            "old_password": "owner-password",
            "new_password1": "a-new-long-password",
            "new_password2": "a-new-long-password",
        },
    )
    assert response.status_code == 302
    assert [_jobs_status(token) for token in tokens] == [401, 401]
    assert _jobs_status(_token("a-new-long-password")) == 200


def test_signing_in_keeps_api_tokens(owner, client):
    token = _token()
    assert client.post("/accounts/login/", {"username": "owner", "password": "owner-password"}).status_code == 302
    assert _jobs_status(token) == 200


def test_account_token_regeneration_revokes_the_tokens_from_the_api(owner, client):
    old = _token()
    client.force_login(owner)
    page = client.post("/accounts/token/")
    new = re.search(r'id="api-token" class="mono" value="([^"]+)"', page.content.decode()).group(1)
    assert (page["Cache-Control"], _jobs_status(old), _jobs_status(new)) == ("no-store", 401, 200)


class _InlineCode(HTMLParser):
    """Collects what a CSP without 'unsafe-inline' refuses: inline scripts, handlers, style attributes."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag, attrs):
        names = dict(attrs)
        if tag == "script" and "src" not in names and names.get("type") != "application/json":
            self.found.append("inline <script>")
        if tag == "style":
            self.found.append("inline <style>")
        self.found += [f"{tag} {name}=" for name in names if name == "style" or name.startswith("on")]


def test_pages_send_a_strict_policy_and_carry_no_inline_code(owner, client, stored_field):
    field = stored_field()
    client.force_login(owner)
    intake.api_token_regenerate(user=owner)
    urls = [
        "/",
        "/jobs/new/",
        f"/jobs/{field.job_id}/",
        f"/jobs/{field.job_id}/gallery/",
        f"/fields/{field.pk}/",
        "/accounts/",
        "/accounts/password/",
        "/api/docs/",
    ]
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        policy = response["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "style-src 'self'" in policy and "unsafe" not in policy, url
        parser = _InlineCode()
        parser.feed(response.content.decode())
        assert parser.found == [], url
    client.logout()
    parser = _InlineCode()
    parser.feed(client.get("/accounts/login/").content.decode())
    assert parser.found == []
