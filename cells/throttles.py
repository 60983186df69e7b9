"""API throttles: per user and per address, rates from REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"].

Counts live in the default cache (CACHE_URL=redis://... shares them between processes). A
throttled call gets 429 with Retry-After. Kept apart from cells.apis because DRF imports the
default throttle classes while rest_framework.views itself loads.
"""

import hashlib

from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle


class _Throttle(SimpleRateThrottle):
    """A rate from REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"][scope], read when the request comes."""

    def get_rate(self):
        return api_settings.DEFAULT_THROTTLE_RATES[self.scope]

    def key(self, request, view) -> str | None:
        raise NotImplementedError

    def get_cache_key(self, request, view):
        key = self.key(request, view)
        return None if key is None else self.cache_format % {"scope": self.scope, "ident": key}


class AnonAddressThrottle(_Throttle):
    scope = "anon"

    def key(self, request, view):
        return None if request.user.is_authenticated else self.get_ident(request)


class UserThrottle(_Throttle):
    scope = "user"

    def key(self, request, view):
        return str(request.user.pk) if request.user.is_authenticated else None


class TokenAddressThrottle(_Throttle):
    """Token requests from one address, whatever the username."""

    scope = "token-address"

    def key(self, request, view):
        return self.get_ident(request)


class TokenUsernameThrottle(_Throttle):
    """Token requests for one username, from any address."""

    scope = "token-username"

    def key(self, request, view):
        username = str(request.data.get("username", "")) if hasattr(request.data, "get") else ""
        username = username.strip().lower()
        # Hashed: a username may hold any character, a cache key may not.
        return hashlib.sha256(username.encode()).hexdigest() if username else None


class JobCreateUserThrottle(_Throttle):
    scope = "job-create-user"

    def key(self, request, view):
        return str(request.user.pk) if request.method == "POST" and request.user.is_authenticated else None


class JobCreateAddressThrottle(_Throttle):
    scope = "job-create-address"

    def key(self, request, view):
        return self.get_ident(request) if request.method == "POST" else None


def page_wait_s(request, *throttle_classes: type[_Throttle]) -> float | None:
    """For a page (not an API view): the seconds to wait when one of the throttles refuses `request`, else None.

    Every throttle counts the request, as DRF's own check does for API views.
    """
    refusals = [
        throttle for throttle in (cls() for cls in throttle_classes) if not throttle.allow_request(request, None)
    ]
    if not refusals:
        return None
    return max((throttle.wait() or 0.0) for throttle in refusals)
