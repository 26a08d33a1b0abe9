"""Bulwark settings, read from environment variables.

The defaults are the embedded ones: a SQLite file and keys under BULWARK_DATA_DIR, Celery worker threads in
the web process over an in-memory transport, and the Channels in-memory layer. Production sets DATABASE_URL,
REDIS_URL and CELERY_BROKER_URL, SECRET_KEY(_FILE), BULWARK_CREDENTIAL_KEYS(_FILE), ALLOWED_HOSTS and
BULWARK_TLS=true. README.md lists every variable.
"""

from __future__ import annotations

from pathlib import Path

import dj_database_url
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from config.env import Env, persistent_secret

env = Env()

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env.str("BULWARK_DATA_DIR", str(BASE_DIR / "var")) or "").resolve()

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.secret("SECRET_KEY") or persistent_secret(DATA_DIR / "secret_key")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", [])

# Credentials (vCenter, Hyper-V, S3 keys, repository passphrases) are encrypted with the first of these Fernet
# keys; the others still decrypt, so a key can be rotated by prepending a new one and running
# `manage.py rotate_credentials`.
_credential_keys = env.secret("BULWARK_CREDENTIAL_KEYS") or persistent_secret(
    DATA_DIR / "credential_key", lambda: Fernet.generate_key().decode()
)
CREDENTIAL_KEYS = [key.strip() for key in _credential_keys.split(",") if key.strip()]
for _key in CREDENTIAL_KEYS:
    try:
        Fernet(_key)
    except ValueError:
        raise ImproperlyConfigured(
            "BULWARK_CREDENTIAL_KEYS holds a value that is not a Fernet key (32 url-safe base64 bytes); "
            "make one with: python -c "
            "'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
        ) from None

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "django_celery_beat",
    "core",
    "inventory",
    "protection",
    "catalog",
    "restores",
]

MIDDLEWARE = [
    "core.middleware.ContentSecurityPolicyMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "core.middleware.AuditContextMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
AUTH_USER_MODEL = "core.User"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

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
                "core.context_processors.navigation",
            ],
        },
    },
]

# Database: SQLite under the data directory unless DATABASE_URL says otherwise.
DATABASE_URL = env.url(
    "DATABASE_URL",
    f"sqlite:///{DATA_DIR / 'bulwark.sqlite3'}",
    schemes=("sqlite", "postgres", "postgresql", "pgsql"),
)
DATABASES = {"default": dj_database_url.parse(DATABASE_URL or "", conn_max_age=60, conn_health_checks=True)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        # Worker threads write while the web serves: WAL lets readers go on, IMMEDIATE avoids lock upgrades
        # that fail with "database is locked", and the timeout waits for a writer instead of failing.
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not Django's in-memory default: browser tests serve from a second thread with its own connection.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test-bulwark.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Live events: channels-redis when REDIS_URL is set, the in-process layer otherwise.
REDIS_URL = env.url("REDIS_URL", None, schemes=("redis", "rediss", "unix"))
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "prefix": env.str("BULWARK_CHANNEL_PREFIX", "bulwark")},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "core.channel_layer.ThreadSafeInMemoryChannelLayer"}}

# Celery: the in-memory transport runs worker threads inside the web process (embedded); production points
# CELERY_BROKER_URL at RabbitMQ or Redis and runs `celery -A config worker -Q proxy.<name>` on each proxy.
CELERY_BROKER_URL = env.url(
    "CELERY_BROKER_URL",
    "memory://localhost/",
    schemes=("memory", "amqp", "amqps", "pyamqp", "redis", "rediss"),
)
BULWARK_EMBEDDED_WORKER = env.bool(
    "BULWARK_EMBEDDED_WORKER", default=(CELERY_BROKER_URL or "").startswith("memory://")
)
BULWARK_EMBEDDED_WORKER_THREADS = env.int("BULWARK_EMBEDDED_WORKER_THREADS", 4, minimum=1, maximum=64)
# Results are only kept in-process (embedded); the database row is the truth about any run.
CELERY_RESULT_BACKEND = env.str(
    "CELERY_RESULT_BACKEND", "cache+memory://" if BULWARK_EMBEDDED_WORKER else None
)
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_SERIALIZER = "json"
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
# Periodic work. Production runs `celery -A config beat` with django-celery-beat's database scheduler (these
# entries are synced into it, and admins can add their own); the embedded install runs a beat thread.
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_BEAT_SCHEDULE = {
    "discover-due-sources": {"task": "inventory.discover_due", "schedule": 60.0},
    "check-agents": {"task": "inventory.check_agents", "schedule": 60.0},
    "check-unprotected": {"task": "protection.check_unprotected", "schedule": 300.0},
    "schedule-backups": {"task": "protection.schedule_due", "schedule": 60.0},
    "check-rpo": {"task": "protection.check_rpo", "schedule": 300.0},
    "prune-repositories": {"task": "protection.prune_repositories", "schedule": 24 * 3600.0},
    "catalog-pending": {"task": "catalog.catalog_pending", "schedule": 300.0},
}

# A machine discovered this long ago that still has no policy raises an "unprotected" alert.
BULWARK_UNPROTECTED_GRACE_MINUTES = env.int("BULWARK_UNPROTECTED_GRACE_MINUTES", 60, minimum=0)
# Backup streams: without proxies, the embedded worker runs this many at once; snapshots taken for backups at
# the same time on one ESXi host or one datastore are limited (they slow the VMs down and fill datastores).
BULWARK_DEFAULT_STREAMS = env.int("BULWARK_DEFAULT_STREAMS", 4, minimum=1)
BULWARK_SNAPSHOTS_PER_HOST = env.int("BULWARK_SNAPSHOTS_PER_HOST", 4, minimum=1)
BULWARK_SNAPSHOTS_PER_DATASTORE = env.int("BULWARK_SNAPSHOTS_PER_DATASTORE", 4, minimum=1)
# A running backup whose worker has not reported for this long is failed (and retried): its worker died.
BULWARK_RUN_STALE_SECONDS = env.int("BULWARK_RUN_STALE_SECONDS", 300, minimum=30)
# During a backup, the packs stored so far are indexed at least this often: a killed run's data is reused.
BULWARK_INDEX_CHECKPOINT_SECONDS = env.int("BULWARK_INDEX_CHECKPOINT_SECONDS", 60, minimum=1)
# Follow vSphere changes live (WaitForUpdatesEx) in the web process of the embedded install.
BULWARK_EMBEDDED_WATCH = env.bool("BULWARK_EMBEDDED_WATCH", default=BULWARK_EMBEDDED_WORKER)

CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Failed logins allowed per user name and client address in LOGIN_FAILURE_WINDOW seconds (three times as many per
# address, whatever the names).
LOGIN_FAILURE_LIMIT = env.int("BULWARK_LOGIN_FAILURE_LIMIT", 10, minimum=1)
LOGIN_FAILURE_WINDOW = env.int("BULWARK_LOGIN_FAILURE_WINDOW", 900, minimum=1)
# Addresses the console never connects to (vCenter, Hyper-V, S3 endpoints an admin enters): CIDRs, e.g.
# "169.254.0.0/16,10.20.0.0/16". Empty by default in the embedded install.
BULWARK_OUTBOUND_DENY = env.list("BULWARK_OUTBOUND_DENY", [])
try:
    from connectors.outbound import parse_networks

    BULWARK_OUTBOUND_NETWORKS = parse_networks(BULWARK_OUTBOUND_DENY)
except ValueError as _error:
    raise ImproperlyConfigured(f"BULWARK_OUTBOUND_DENY: {_error}") from None
# A user name guessed from many addresses waits this long after each further failure (core/throttle.py).
LOGIN_BACKOFF_SECONDS = env.int("BULWARK_LOGIN_BACKOFF_SECONDS", 60, minimum=1)

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
# Serve straight from the source folders when collectstatic has not run (tests, development).
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# Transport security. BULWARK_TLS=true is for a console reached over HTTPS (directly or behind a proxy that
# sets X-Forwarded-Proto, with BULWARK_TRUST_FORWARDED_PROTO=true).
TLS = env.bool("BULWARK_TLS", default=False)
SESSION_COOKIE_SECURE = TLS
CSRF_COOKIE_SECURE = TLS
SECURE_SSL_REDIRECT = TLS
SECURE_HSTS_SECONDS = env.int("BULWARK_HSTS_SECONDS", 31_536_000 if TLS else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = TLS
SECURE_HSTS_PRELOAD = TLS
if env.bool("BULWARK_TRUST_FORWARDED_PROTO", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = env.int("BULWARK_SESSION_SECONDS", 8 * 3600, minimum=300)
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "core.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["core.permissions.IsBackupAdmin"],
    "DEFAULT_FILTER_BACKENDS": [
        "core.filters.ScopedFilterBackend",
        "rest_framework.filters.SearchFilter",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_PAGINATION_CLASS": "core.pagination.BoundedLimitOffsetPagination",
    "PAGE_SIZE": 100,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_RATES": {"token": env.str("BULWARK_TOKEN_RATE", "600/minute"), "anon": "60/minute"},
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Bulwark API",
    "DESCRIPTION": "Data protection console: inventory, protection, catalog and restores.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI is served from the installed sidecar package through whitenoise, never from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

LOG_LEVEL = env.str("BULWARK_LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "{asctime} {levelname} {name}: {message}", "style": "{"}},
    "filters": {"one_line_client_errors": {"()": "core.logfilters.OneLineClientErrors"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["one_line_client_errors"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}

EMAIL_BACKEND = env.str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", "bulwark@localhost")

# The file catalog of image points: the walker child's wall-clock deadline and memory (a crafted disk cannot
# hang or exhaust a worker).
BULWARK_CATALOG_SECONDS = env.int("BULWARK_CATALOG_SECONDS", 3600, minimum=5)
BULWARK_CATALOG_MEMORY_MB = env.int("BULWARK_CATALOG_MEMORY_MB", 1024, minimum=128)
