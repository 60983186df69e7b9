"""Thirty wrong passwords are not all tried: the token API (DRF throttles) and the sign-in page
(django-axes) answer 429 with Retry-After, and the right password waits too."""

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def counting_cache(settings):
    """The suite's cache counts nothing; these tests need one that does."""
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    cache.clear()
    yield
    cache.clear()


def _rates(settings, **rates):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], **rates},
    }


def test_thirty_wrong_passwords_on_the_token_api_are_refused_and_the_right_one_waits(owner, settings):
    # Failed token requests count towards the sign-in lockout (django-axes) like the login page's.
    client = APIClient()
    codes = [client.post("/api/token/", {"username": "owner", "password": f"guess-{n}"}).status_code for n in range(30)]
    # The failure that reaches the limit is answered with the lockout itself.
    limit = settings.AXES_FAILURE_LIMIT
    assert codes == [400] * (limit - 1) + [429] * (31 - limit)
    right = client.post("/api/token/", {"username": "owner", "password": "owner-password"})
    assert right.status_code == 429 and int(right["Retry-After"]) > 0
    assert right.json()["detail"].startswith("Request was throttled.")


def test_token_requests_are_throttled_per_address_even_with_the_right_password(owner, settings):
    _rates(settings, **{"token-address": "3/min"})
    client = APIClient()
    codes = [
        client.post("/api/token/", {"username": "owner", "password": "owner-password"}).status_code for _ in range(5)
    ]
    assert codes == [200, 200, 200, 429, 429]
    assert 1 <= int(client.post("/api/token/", {"username": "owner", "password": "x"})["Retry-After"]) <= 60


def test_token_attempts_are_counted_per_username_across_addresses(owner, settings):
    _rates(settings, **{"token-address": "100/min", "token-username": "3/min"})
    codes = [
        APIClient(REMOTE_ADDR=f"10.0.0.{n}").post("/api/token/", {"username": "Owner", "password": "x"}).status_code
        for n in range(5)
    ]
    assert codes == [400, 400, 400, 429, 429]
    other = APIClient(REMOTE_ADDR="10.0.0.9").post("/api/token/", {"username": "outsider", "password": "x"})
    assert other.status_code == 400


def test_thirty_wrong_passwords_on_the_sign_in_page_lock_out_and_the_right_one_waits(owner, client, settings):
    codes = [
        client.post("/accounts/login/", {"username": "owner", "password": f"guess-{n}"}).status_code for n in range(30)
    ]
    limit = settings.AXES_FAILURE_LIMIT
    assert codes == [200] * (limit - 1) + [429] * (31 - limit)
    right = client.post("/accounts/login/", {"username": "owner", "password": "owner-password"})
    assert (right.status_code, right["Retry-After"]) == (429, str(int(settings.AXES_COOLOFF_TIME.total_seconds())))
    assert "Too many sign-in attempts" in right.content.decode()
    assert "_auth_user_id" not in client.session


def test_a_locked_out_address_cannot_try_another_username_nor_get_a_token(owner, outsider, client, settings):
    for n in range(settings.AXES_FAILURE_LIMIT):
        client.post("/accounts/login/", {"username": "nobody", "password": f"guess-{n}"})
    assert client.post("/accounts/login/", {"username": "outsider", "password": "outsider-password"}).status_code == 429
    token = APIClient().post("/api/token/", {"username": "outsider", "password": "outsider-password"})
    assert token.status_code == 429 and int(token["Retry-After"]) > 0


def test_a_locked_out_username_is_locked_from_every_address(owner, client, settings):
    for n in range(settings.AXES_FAILURE_LIMIT):
        client.post("/accounts/login/", {"username": "owner", "password": f"guess-{n}"}, REMOTE_ADDR=f"10.0.1.{n}")
    response = client.post(
        "/accounts/login/", {"username": "owner", "password": "owner-password"}, REMOTE_ADDR="10.0.2.1"
    )
    assert response.status_code == 429


def test_the_admin_sign_in_is_locked_out_too(owner, client, settings):
    for n in range(settings.AXES_FAILURE_LIMIT):
        client.post("/admin/login/", {"username": "owner", "password": f"guess-{n}"})
    assert client.post("/admin/login/", {"username": "owner", "password": "owner-password"}).status_code == 429


def test_job_creation_is_throttled_per_user(owner_api, settings, channel_uploads, sent_to_worker):
    _rates(settings, **{"job-create-user": "2/hour"})
    codes = [
        owner_api.post("/api/jobs/", {"files": list(channel_uploads().values())}, format="multipart").status_code
        for _ in range(3)
    ]
    assert codes == [201, 201, 429]
    assert owner_api.get("/api/jobs/").status_code == 200  # reading is not job creation


def test_job_creation_on_the_upload_page_is_throttled_per_user_too(
    owner, client, settings, channel_uploads, sent_to_worker
):
    _rates(settings, **{"job-create-user": "2/hour"})
    client.force_login(owner)
    codes = [
        client.post("/jobs/new/", {"segmentation_backend": "classical", **channel_uploads()}).status_code
        for _ in range(3)
    ]
    assert codes == [302, 302, 429]
    refused = client.post("/jobs/new/", {"segmentation_backend": "classical", **channel_uploads()})
    assert int(refused["Retry-After"]) > 0
    assert "Too many uploads in a short time" in refused.content.decode()
    assert client.get("/jobs/new/").status_code == 200
