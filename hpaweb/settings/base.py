"""Settings shared by every environment; everything that differs comes from the environment."""

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

from ml.constants import DEFAULT_MODEL_PATH, DEFAULT_SEGMENTATION_BACKEND, MAX_SIDE_PX

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(os.environ.get("HPAWEB_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = [h for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",") if h]
CSRF_TRUSTED_ORIGINS = [o for o in os.environ.get("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if o]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "knox",
    "axes",
    "csp",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "cells",
]

MIDDLEWARE = [
    # Probes and scrapes reach pods by IP over plain HTTP: answered before host checks and redirects.
    "cells.health.ProbeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    # Before CSRF, which reads the body: the size limit holds before anything is spooled.
    "cells.upload_limits.UploadLimitMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as django-axes asks: turns a locked-out sign-in into its 429 response.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "hpaweb.urls"
WSGI_APPLICATION = "hpaweb.wsgi.application"
ASGI_APPLICATION = "hpaweb.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# SQLite by default (WAL, so the web process and the worker can write at once);
# DATABASE_URL=postgres://... switches to PostgreSQL.
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "job-list"
LOGOUT_REDIRECT_URL = "login"

# Sign-in attempts (the login page and the admin): django-axes locks out an address, and
# separately a username, after HPAWEB_LOGIN_FAILURE_LIMIT failures, for HPAWEB_LOGIN_COOLOFF_MINUTES,
# answering 429 with Retry-After. Attempts are kept in the database, so every web process shares them.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("HPAWEB_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("HPAWEB_LOGIN_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "cells.views.login_locked_out"
# Addresses come from X-Forwarded-For only past this many trusted proxies (0: the peer's address).
HPAWEB_TRUSTED_PROXY_COUNT = env_int("HPAWEB_TRUSTED_PROXY_COUNT", 0)
AXES_IPWARE_PROXY_COUNT = HPAWEB_TRUSTED_PROXY_COUNT or None
AXES_IPWARE_META_PRECEDENCE_ORDER = (
    ("HTTP_X_FORWARDED_FOR", "REMOTE_ADDR") if HPAWEB_TRUSTED_PROXY_COUNT else ("REMOTE_ADDR",)
)

# API tokens (django-rest-knox): stored hashed, expire, and go when the password changes.
REST_KNOX = {
    "TOKEN_TTL": timedelta(days=env_int("HPAWEB_API_TOKEN_TTL_DAYS", 30)),
    "AUTH_HEADER_PREFIX": "Token",
}

# HTTPS is ended by a proxy (an ingress, a load balancer) that says so in X-Forwarded-Proto;
# DJANGO_BEHIND_TLS_PROXY=1 trusts that header and turns on redirects, HSTS and secure cookies.
BEHIND_TLS_PROXY = env_bool("DJANGO_BEHIND_TLS_PROXY", False)
if BEHIND_TLS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 31_536_000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("DJANGO_HSTS_PRELOAD", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

# Content-Security-Policy (django-csp): scripts and styles only from this site's static files;
# pages carry no inline script, handler or style attribute. JSON data blocks are not scripts.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:", "blob:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "static"
MEDIA_URL = "media/"
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", VAR_DIR / "media"))
# Media on local disk, or with HPAWEB_S3_BUCKET in S3-compatible object storage (django-storages),
# so web and worker machines share them. Keys come from the environment (AWS_ACCESS_KEY_ID and
# AWS_SECRET_ACCESS_KEY, or the machine's role when those are unset).
HPAWEB_S3_BUCKET = os.environ.get("HPAWEB_S3_BUCKET", "")
if HPAWEB_S3_BUCKET:
    DEFAULT_STORAGE = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": HPAWEB_S3_BUCKET,
            "endpoint_url": os.environ.get("HPAWEB_S3_ENDPOINT_URL") or None,
            "region_name": os.environ.get("HPAWEB_S3_REGION") or None,
            "access_key": os.environ.get("AWS_ACCESS_KEY_ID") or None,
            "secret_key": os.environ.get("AWS_SECRET_ACCESS_KEY") or None,
            "location": os.environ.get("HPAWEB_S3_PREFIX", ""),
            # Private objects; every file is served through a view that checks its owner.
            "default_acl": None,
            "querystring_auth": True,
            "file_overwrite": False,
        },
    }
else:
    DEFAULT_STORAGE = {"BACKEND": "django.core.files.storage.FileSystemStorage"}
STORAGES = {
    "default": DEFAULT_STORAGE,
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# /healthz fails below this much free space under MEDIA_ROOT; /metrics asks for this bearer token when set.
HPAWEB_HEALTH_MIN_FREE_BYTES = env_int("HPAWEB_HEALTH_MIN_FREE_BYTES", 1024**3)
HPAWEB_METRICS_TOKEN = os.environ.get("HPAWEB_METRICS_TOKEN", "")

# Throttle counts; CACHE_URL=redis://... shares them between processes and machines.
CACHE_URL = os.environ.get("CACHE_URL", "")
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}
    if CACHE_URL
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
}

# Uploads: files over FILE_UPLOAD_MAX_MEMORY_SIZE go to a temporary file, not memory.
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024**2
FILE_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024**2
# The largest request body accepted (cells.upload_limits), checked before it is spooled.
HPAWEB_MAX_UPLOAD_BYTES = env_int("HPAWEB_MAX_UPLOAD_BYTES", 2 * 1024**3)
HPAWEB_MAX_SIDE_PX = env_int("HPAWEB_MAX_SIDE_PX", MAX_SIDE_PX)
HPAWEB_MAX_FIELDS_PER_JOB = env_int("HPAWEB_MAX_FIELDS_PER_JOB", 500)
# A zip of fields is refused whole beyond these (zip bombs, archives of junk).
HPAWEB_ZIP_MAX_ENTRIES = env_int("HPAWEB_ZIP_MAX_ENTRIES", 4 * HPAWEB_MAX_FIELDS_PER_JOB + 100)
HPAWEB_ZIP_MAX_BYTES = env_int("HPAWEB_ZIP_MAX_BYTES", 8 * 1024**3)

REST_FRAMEWORK = {
    # Token first: its scheme goes into WWW-Authenticate, so an anonymous call gets 401, not 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "knox.auth.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # Throttles count in the default cache (CACHE_URL: Redis, to share them between web processes).
    "DEFAULT_THROTTLE_CLASSES": ["cells.throttles.AnonAddressThrottle", "cells.throttles.UserThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "anon": os.environ.get("HPAWEB_THROTTLE_ANON", "120/min"),
        "user": os.environ.get("HPAWEB_THROTTLE_USER", "600/min"),
        "token-address": os.environ.get("HPAWEB_THROTTLE_TOKEN", "10/min"),
        "token-username": os.environ.get("HPAWEB_THROTTLE_TOKEN", "10/min"),
        "job-create-user": os.environ.get("HPAWEB_THROTTLE_JOB_CREATE", "30/hour"),
        "job-create-address": os.environ.get("HPAWEB_THROTTLE_JOB_CREATE", "30/hour"),
    },
    "NUM_PROXIES": HPAWEB_TRUSTED_PROXY_COUNT,
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "hpaweb API",
    "DESCRIPTION": "Per-cell protein localisation in four-channel HPA-style fluorescence fields.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI from the installed drf-spectacular-sidecar package, never from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Several "kind" choice sets: named here so the schema (and `check --deploy`) has no collision.
    "ENUM_NAME_OVERRIDES": {
        "RegisteredModelKindEnum": "cells.models.RegisteredModel.Kind",
        "CellAnnotationKindEnum": "cells.models.CellAnnotation.Kind",
    },
}

# Celery. Default broker: kombu's filesystem transport under var/broker, which needs no
# server but still runs a real worker process; CELERY_BROKER_URL=redis://... for Redis.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _queue_dir = VAR_DIR / "broker" / "queue"
    for _folder in ("queue", "processed", "control"):
        (VAR_DIR / "broker" / _folder).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir),
        "data_folder_out": str(_queue_dir),
        "processed_folder": str(VAR_DIR / "broker" / "processed"),
        "control_folder": str(VAR_DIR / "broker" / "control"),
        "store_processed": False,
        # How often an idle worker looks for messages; also paces how fast it drops the tasks of deleted jobs.
        "polling_interval": 0.05,
    }
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
# A task whose pool process died is acknowledged: the worker queues its field again itself, a bounded
# number of times (cells.tasks, cells.sweeper), instead of the broker redelivering it forever.
CELERY_TASK_REJECT_ON_WORKER_LOST = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Read by the worker where the work runs; messages carry no limits (hpaweb.celery.WorkerLimitsTask).
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 600)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 660)
if 0 < CELERY_TASK_TIME_LIMIT < CELERY_TASK_SOFT_TIME_LIMIT:
    # Celery would refuse to send every task (beat's sweeper included) with these.
    raise ImproperlyConfigured(
        f"CELERY_TASK_SOFT_TIME_LIMIT ({CELERY_TASK_SOFT_TIME_LIMIT} s) is above CELERY_TASK_TIME_LIMIT "
        f"({CELERY_TASK_TIME_LIMIT} s); set the soft limit below the hard one, or to 0 to turn it off."
    )
# A field still running this long after the hard limit has no live task: the sweeper queues it again.
HPAWEB_SWEEP_GRACE_S = env_int("HPAWEB_SWEEP_GRACE_S", 30)
HPAWEB_SWEEP_INTERVAL_S = env_int("HPAWEB_SWEEP_INTERVAL_S", 60)
CELERY_BEAT_SCHEDULE = {
    "sweep-fields": {
        "task": "cells.tasks.sweep_fields",
        "schedule": HPAWEB_SWEEP_INTERVAL_S,
        "options": {"expires": HPAWEB_SWEEP_INTERVAL_S},
    }
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # Redis hands an unacknowledged message out again after this; tied to the hard limit instead of
    # its default hour (a late copy of a field's task finds the field claimed and does nothing).
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 2 * CELERY_TASK_TIME_LIMIT + 60}
# Publishing to a broker that is down fails within seconds (the upload answers 503), not after minutes.
CELERY_BROKER_CONNECTION_TIMEOUT = env_int("CELERY_BROKER_CONNECTION_TIMEOUT", 3)
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)

# Machine learning. `ml` never reads settings: cells/ml_config.py passes these along.
ML_DEVICE = os.environ.get("ML_DEVICE", "auto")
ML_MODEL_PATH = os.environ.get("ML_MODEL_PATH", str(DEFAULT_MODEL_PATH))
ML_SEGMENTATION_BACKEND = os.environ.get("ML_SEGMENTATION_BACKEND", DEFAULT_SEGMENTATION_BACKEND)
ML_NUCLEI_WEIGHTS = os.environ.get("ML_NUCLEI_WEIGHTS", "")
ML_CELL_WEIGHTS = os.environ.get("ML_CELL_WEIGHTS", "")
ML_TORCH_THREADS = env_int("ML_TORCH_THREADS", 0)
# Classifiers a worker process keeps loaded (least recently used goes first).
ML_MAX_LOADED_MODELS = env_int("ML_MAX_LOADED_MODELS", 3)
# Per-cell measurements in the worker (ml.measure): textures (Haralick, LBP) on, wavelet scattering (costly) off.
ML_MEASURE_TEXTURE = env_bool("ML_MEASURE_TEXTURE", True)
ML_MEASURE_SCATTERING = env_bool("ML_MEASURE_SCATTERING", False)
# Quality-control thresholds (ml.qc.QcThresholds), each set as ML_QC_<NAME>, e.g. ML_QC_MIN_SOLIDITY=0.75.
ML_QC_THRESHOLDS = {
    key[len("ML_QC_") :].lower(): value for key, value in os.environ.items() if key.startswith("ML_QC_")
}
# Whether users who are not administrators may import private models; shared ones are admins' only.
HPAWEB_PRIVATE_MODELS = env_bool("HPAWEB_PRIVATE_MODELS", False)
HPAWEB_MAX_MODEL_BYTES = env_int("HPAWEB_MAX_MODEL_BYTES", 500 * 1024**2)

# DJANGO_LOG_FORMAT=json writes one JSON object a line (for a log collector); plain is for people.
LOG_FORMAT = os.environ.get("DJANGO_LOG_FORMAT", "plain")
if LOG_FORMAT not in {"plain", "json"}:
    raise ValueError(f"DJANGO_LOG_FORMAT is {LOG_FORMAT!r}; set it to plain or json.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": os.environ.get("DJANGO_LOG_LEVEL", "INFO")},
}
# The worker logs through the same handler instead of replacing it with Celery's own format.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# Each deployment (and each test run) can keep its own queues on a shared broker: CELERY_QUEUE names
# them. GPU work, CPU work and training have queues of their own (cells/queues.py routes each task);
# a worker started without -Q takes them all.
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("CELERY_QUEUE", "hpaweb")
HPAWEB_QUEUES = {kind: f"{CELERY_TASK_DEFAULT_QUEUE}-{kind}" for kind in ("cpu", "gpu", "training")}
CELERY_TASK_QUEUES = [Queue(name) for name in (CELERY_TASK_DEFAULT_QUEUE, *HPAWEB_QUEUES.values())]
CELERY_TASK_ROUTES = ["cells.queues.route_task"]
