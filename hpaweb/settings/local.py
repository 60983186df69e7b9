"""Settings for running on one machine (`make run`): debug on unless DJANGO_DEBUG says otherwise."""

import os

from hpaweb.settings.base import *  # noqa: F403
from hpaweb.settings.base import env_bool

DEBUG = env_bool("DJANGO_DEBUG", True)
# A fixed key is fine for a local instance; production.py refuses to start without one.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "local-development-key-not-for-production")
