"""Settings for the test suite: fast hashing, files and the embedded broker in a temporary folder.

The environment variables set here are inherited by the worker processes the tests start, so
those workers share the test database, media folder and queue.
"""

import os
import tempfile
import uuid
from pathlib import Path

os.environ.setdefault("HPAWEB_VAR_DIR", tempfile.mkdtemp(prefix="hpaweb-test-"))
os.environ.setdefault("CELERY_QUEUE", f"hpaweb-test-{uuid.uuid4().hex[:12]}")

from hpaweb.settings.base import *  # noqa: E402,F403
from hpaweb.settings.base import DATABASES, STATIC_ROOT, VAR_DIR  # noqa: E402

SECRET_KEY = "test-key"
DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", VAR_DIR / "media"))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Throttles count nothing here; tests of throttling switch a real cache on.
CACHES = {"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not memory, so a worker process can open the same test database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-db.sqlite3")}
