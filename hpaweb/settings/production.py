"""Settings for a deployed instance: secrets have no default.

Behind an HTTPS proxy set DJANGO_BEHIND_TLS_PROXY=1 (base.py): redirects, HSTS and secure cookies.
"""

import os

from django.core.exceptions import ImproperlyConfigured

from hpaweb.settings.base import *  # noqa: F403
from hpaweb.settings.base import BEHIND_TLS_PROXY, env_bool

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "").strip()
if not SECRET_KEY:
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY is missing or empty; set it to a long random string, for example the output of "
        "`python -c 'import secrets; print(secrets.token_urlsafe(50))'`, and keep it secret."
    )
DEBUG = False
SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", True) or BEHIND_TLS_PROXY
CSRF_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", True) or BEHIND_TLS_PROXY
