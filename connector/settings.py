"""Settings for the EHR connector, read from the environment (or a `.env` file).

Every variable is listed with a one-line comment in `.env.example`. Defaults
serve a developer on SQLite; production mode (`DEBUG=false`) refuses to start
until the secrets, keys and hosts it needs are given.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from datetime import timedelta
from pathlib import Path

import environ
from csp import constants as csp_constants
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()


def _env_file() -> Path | None:
    """The settings file to read, if any; variables already in the environment always win.

    `ENV_FILE` names it explicitly (`run_demo` points it at `var/demo.env`; empty or
    `/dev/null` reads none). A test run (pytest sets `PYTEST_VERSION`) reads none, so a
    developer's `.env` or the demo's settings never change what the tests see. Otherwise
    `.env`, or the demo's `var/demo.env` when there is no `.env`, so commands typed next
    to a running demo (`manage.py send_demo_siu`) share its keys.
    """
    explicit = os.environ.get("ENV_FILE")
    if explicit is not None:
        return Path(explicit) if explicit.strip() else None
    if os.environ.get("PYTEST_VERSION"):
        return None
    for candidate in (BASE_DIR / ".env", VAR_DIR / "demo.env"):
        if candidate.is_file():
            return candidate
    return None


ENV_FILE = _env_file()
_environment_before = set(os.environ)
if ENV_FILE is not None:
    environ.Env.read_env(ENV_FILE, overwrite=False)
# Names this process took from ENV_FILE rather than its real environment (run_demo drops them).
ENV_FROM_FILE: frozenset[str] = frozenset(set(os.environ) - _environment_before)

DEBUG: bool = env.bool("DEBUG", default=True)
DEV_SECRET_KEY = "dev-only-insecure-key-do-not-use-in-production"  # noqa: S105
SECRET_KEY: str = env.str("SECRET_KEY", default=DEV_SECRET_KEY)
ALLOWED_HOSTS: list[str] = env.list(
    "ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"] if DEBUG else []
)
CSRF_TRUSTED_ORIGINS: list[str] = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# Public origin of this service (scheme and host), used in integration records and links.
PUBLIC_BASE_URL: str = env.str("PUBLIC_BASE_URL", default="http://localhost:8000").rstrip("/")

# Data residency (tenants/regions.py, docs/deployment.md). A multi-region installation is
# one deployment per region, each with its own database, Redis and workers. Empty
# CONNECTOR_REGION (the default, the demo) means a single-region installation.
CONNECTOR_REGION: str = env.str("CONNECTOR_REGION", default="").strip()
# One "region=https://base-url" per line (commas or semicolons also separate them).
CONNECTOR_REGIONS_TEXT: str = env.str("CONNECTOR_REGIONS", default="")
# Shared secret that signs the regions' internal "which region hosts this organization?" calls.
REGION_LOOKUP_SECRET: str = env.str("REGION_LOOKUP_SECRET", default="")
# Lets each region's admin read the others' usage API (reports/usage_summary.py); the same in every region.
SUPPORT_REPORTS_TOKEN: str = env.str("SUPPORT_REPORTS_TOKEN", default="")
REGION_LOOKUP_CACHE_SECONDS: int = env.int("REGION_LOOKUP_CACHE_SECONDS", default=60)

# Where interface engines reach the MLLP listener (host:port), shown in the portal beside the
# HTTPS feed address. Default: this deployment's public host on 2575, the HL7 MLLP port.
MLLP_PUBLIC_ADDRESS: str = env.str("MLLP_PUBLIC_ADDRESS", default="")

# Fernet keys for field-level encryption, newest first; older keys keep decrypting
# rows written before a rotation (see connector/encryption.py).
FIELD_ENCRYPTION_KEYS: list[str] = env.list("FIELD_ENCRYPTION_KEYS", default=[])
# Keys of the lookup hashes (connector/lookup_hash.py) that find opt-outs by phone number and
# clinician links by EHR user ID (both stored encrypted or not at all), current first; lookups
# try them all. Its own key, so rotating SECRET_KEY never forgets a STOP. Unset: SECRET_KEY
# (development only). Rotate with `manage.py rehash_phone_numbers`.
PHONE_HASH_KEY: list[str] = env.list("PHONE_HASH_KEY", default=[])

# Microsoft Entra ID (multi-tenant app registration) for organization sign-in.
SOCIAL_AUTH_AZUREAD_V2_TENANT_OAUTH2_KEY: str = env.str("ENTRA_CLIENT_ID", default="")
SOCIAL_AUTH_AZUREAD_V2_TENANT_OAUTH2_SECRET: str = env.str("ENTRA_CLIENT_SECRET", default="")
ENTRA_CONFIGURED = bool(
    SOCIAL_AUTH_AZUREAD_V2_TENANT_OAUTH2_KEY and SOCIAL_AUTH_AZUREAD_V2_TENANT_OAUTH2_SECRET
)
# The local sign-in for demo users: only without Entra ID and never in production.
DEMO_SIGN_IN: bool = env.bool("DEMO_SIGN_IN", default=DEBUG and not ENTRA_CONFIGURED)


# Outbound calls to EHRs (connector/ehr_http.py): guard rails against slow,
# huge or internal targets. Hosts listed in EHR_INSECURE_HOSTS may be reached
# over plain http and on private or loopback addresses: for the demo and tests.
EHR_INSECURE_HOSTS: list[str] = env.list("EHR_INSECURE_HOSTS", default=[])
EHR_HTTP_CONNECT_TIMEOUT: float = env.float("EHR_HTTP_CONNECT_TIMEOUT", default=5.0)
EHR_HTTP_TOTAL_TIMEOUT: float = env.float("EHR_HTTP_TOTAL_TIMEOUT", default=15.0)

# Outbound webhooks (connector/webhooks/, docs/webhooks.md). They go through the same
# guarded client as EHR calls: a receiver on a private address must be in EHR_INSECURE_HOSTS.
# A failed delivery is retried with exponential backoff (from the first delay, doubling,
# at most 4 hours apart) for WEBHOOK_RETRY_WINDOW_SECONDS; an endpoint whose delivery
# fails that long, or that fails WEBHOOK_DISABLE_AFTER_FAILURES times in a row, is
# disabled and the organization's administrators get an e-mail.
WEBHOOK_RETRY_WINDOW_SECONDS: int = env.int("WEBHOOK_RETRY_WINDOW_SECONDS", default=24 * 3600)
WEBHOOK_FIRST_BACKOFF_SECONDS: int = env.int("WEBHOOK_FIRST_BACKOFF_SECONDS", default=30)
WEBHOOK_DISABLE_AFTER_FAILURES: int = env.int("WEBHOOK_DISABLE_AFTER_FAILURES", default=100)
# Finished deliveries (their payloads: IDs and times) are deleted after this many days.
WEBHOOK_LOG_DAYS: int = env.int("WEBHOOK_LOG_DAYS", default=30)
EHR_HTTP_MAX_RESPONSE_BYTES: int = env.int("EHR_HTTP_MAX_RESPONSE_BYTES", default=2 * 1024 * 1024)

# The SMART client this installation is registered as in the EHRs (Epic's "client ID").
SMART_CLIENT_ID: str = env.str("SMART_CLIENT_ID", default="open-ehr-connector")
# Optional confidential-client secret, only as a fallback to private_key_jwt.
SMART_CLIENT_SECRET: str = env.str("SMART_CLIENT_SECRET", default="")
# How the connector authenticates at EHR token endpoints: private_key_jwt or client_secret.
SMART_CLIENT_AUTH: str = env.str("SMART_CLIENT_AUTH", default="private_key_jwt")
# PEM files of the RS384 signing keys, newest first (connector/signing_keys.py).
SMART_SIGNING_KEY_FILES: list[str] = env.list("SMART_SIGNING_KEY_FILES", default=[])

# Meeting provider (connector/meetings/): demo page, Jitsi Meet, or Microsoft Teams via Graph.
MEETING_BACKEND: str = env.str("MEETING_BACKEND", default="connector.meetings.demo.DemoMeetingBackend")
# Self-hosted Jitsi Meet with JWT authentication (docs/meetings.md).
JITSI_BASE_URL: str = env.str("JITSI_BASE_URL", default="")
JITSI_APP_ID: str = env.str("JITSI_APP_ID", default="")
JITSI_APP_SECRET: str = env.str("JITSI_APP_SECRET", default="")
JITSI_WEBHOOK_SECRET: str = env.str("JITSI_WEBHOOK_SECRET", default="")
# Microsoft Teams through Microsoft Graph (application permissions; docs/meetings.md).
GRAPH_CLIENT_ID: str = env.str("GRAPH_CLIENT_ID", default="")
GRAPH_CLIENT_SECRET: str = env.str("GRAPH_CLIENT_SECRET", default="")
GRAPH_AUTHORITY: str = env.str("GRAPH_AUTHORITY", default="https://login.microsoftonline.com")
GRAPH_BASE_URL: str = env.str("GRAPH_BASE_URL", default="https://graph.microsoft.com")
GRAPH_SCOPE: str = env.str("GRAPH_SCOPE", default="https://graph.microsoft.com/.default")
GRAPH_WEBHOOK_CLIENT_STATE: str = env.str("GRAPH_WEBHOOK_CLIENT_STATE", default="")

# SMS (sms/): the provider backend, pacing per sending number, and how long a
# patient's number is kept after the visit ends.
SMS_BACKEND: str = env.str("SMS_BACKEND", default="sms.backends.console.ConsoleSmsBackend")
SMS_RATE_PER_NUMBER: float = env.float("SMS_RATE_PER_NUMBER", default=1.0)
# Shortest lease of a text being sent (it is at least twice Q_TIMEOUT anyway): after it, a text
# whose dispatcher died is reconciled with the provider (sms/services/recovery.py).
SMS_SEND_LEASE_SECONDS: int = env.int("SMS_SEND_LEASE_SECONDS", default=300)
SMS_PHONE_GRACE_HOURS: int = env.int("SMS_PHONE_GRACE_HOURS", default=24)
HL7_MAX_BODY_BYTES: int = env.int("HL7_MAX_BODY_BYTES", default=64 * 1024)
# Seconds a worker keeps an organization's feed setup (certificate, endpoint, SMS
# settings, consent) between messages; a change in any process is seen by all within a
# second (a token in the shared cache), this bounds changes made outside the ORM;
# see sms/hl7/feed_setup.py. 0: read it every time.
HL7_FEED_SETUP_CACHE_SECONDS: float = env.float("HL7_FEED_SETUP_CACHE_SECONDS", default=10.0)
TWILIO_ACCOUNT_SID: str = env.str("TWILIO_ACCOUNT_SID", default="")
TWILIO_AUTH_TOKEN: str = env.str("TWILIO_AUTH_TOKEN", default="")
TWILIO_STATUS_CALLBACK_URL: str = env.str("TWILIO_STATUS_CALLBACK_URL", default="")
TWILIO_CALLBACK_BASE_URL: str = env.str("TWILIO_CALLBACK_BASE_URL", default="")
TWILIO_API_BASE_URL: str = env.str("TWILIO_API_BASE_URL", default="")
ACS_CONNECTION_STRING: str = env.str("ACS_CONNECTION_STRING", default="")
ACS_AGREE_TO_NOT_RESELL: bool = env.bool("ACS_AGREE_TO_NOT_RESELL", default=False)
ACS_EVENTGRID_SECRET: str = env.str("ACS_EVENTGRID_SECRET", default="")

# The sandbox SMART on FHIR EHR under /sandbox-ehr/ (connector/sandbox_ehr): a
# development peer for the demo and the tests, refused in production mode.
SANDBOX_EHR: bool = env.bool("SANDBOX_EHR", default=False)
SANDBOX_EHR_CLIENT_SECRET: str = env.str("SANDBOX_EHR_CLIENT_SECRET", default="sandbox-secret")
SANDBOX_EHR_SLOW_SECONDS: float = env.float("SANDBOX_EHR_SLOW_SECONDS", default=3)


def _refuse_half_configured_production() -> None:
    """Production mode must not start on development defaults."""
    problems = []
    if SECRET_KEY == DEV_SECRET_KEY or len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5:
        problems.append("SECRET_KEY must be set to a random value of at least 50 characters")
    if not FIELD_ENCRYPTION_KEYS:
        problems.append(
            "FIELD_ENCRYPTION_KEYS must list at least one Fernet key "
            "(python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')"
        )
    if not PHONE_HASH_KEY or any(len(key) < 32 for key in PHONE_HASH_KEY):
        problems.append(
            "PHONE_HASH_KEY must list at least one random key of 32+ characters, current first "
            "(python -c 'import secrets; print(secrets.token_urlsafe(48))'); an installation that "
            "already has opt-outs lists its SECRET_KEY after the new key, then runs "
            "manage.py rehash_phone_numbers"
        )
    if not ALLOWED_HOSTS:
        problems.append("ALLOWED_HOSTS must name the host names this service answers to")
    if DEMO_SIGN_IN:
        problems.append("DEMO_SIGN_IN cannot be on in production mode")
    if SANDBOX_EHR:
        problems.append("SANDBOX_EHR cannot be on in production mode")
    if bool(SOCIAL_AUTH_AZUREAD_V2_TENANT_OAUTH2_KEY) != bool(SOCIAL_AUTH_AZUREAD_V2_TENANT_OAUTH2_SECRET):
        problems.append("ENTRA_CLIENT_ID and ENTRA_CLIENT_SECRET must be set together")
    if problems:
        raise ImproperlyConfigured(
            "Refusing to start in production mode (DEBUG=false): " + "; ".join(problems) + "."
        )


if not DEBUG:
    _refuse_half_configured_production()

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files served from here: the CSP allows no other origin
    "csp",
    "social_django",
    "simple_history",
    "django_q",
    "axes",
    "connector",
    "connector.sandbox_ehr",
    "tenants",
    "sms",
    "reports",
    "connector.webhooks",
]

MIDDLEWARE = [
    "connector.request_id.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Content-Security-Policy on every response (CONTENT_SECURITY_POLICY below).
    "csp.middleware.CSPMiddleware",
    # Visit pages the EHR frames (xframe_options_exempt) keep no frame-ancestors limit.
    "connector.csp_framing.FramedByTheEhrMiddleware",
    # Multi-region only: a request for an organization hosted elsewhere gets a redirect or a 421.
    "tenants.region_routing.RegionRoutingMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "connector.sessions.SessionTimeoutMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "tenants.middleware.TenantScopeMiddleware",
    # simple-history's, minus API tokens as change authors (they are not User rows).
    "tenants.middleware.HistoryRequestMiddleware",
    "social_django.middleware.SocialAuthExceptionMiddleware",
    # Turns django-ratelimit's refusal into RATELIMIT_VIEW (429), not a 403.
    "django_ratelimit.middleware.RatelimitMiddleware",
    # Answers a locked-out sign-in with tenants.sign_in_defences.locked_out (last, as django-axes asks).
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "connector.urls"
WSGI_APPLICATION = "connector.wsgi.application"
ASGI_APPLICATION = "connector.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "tenants.context_processors.tenant_context",
            ],
        },
    },
]

DATABASES = {"default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'connector.sqlite3'}")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=0)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # Several processes (web, worker) share the file: wait for locks instead of failing.
    # WAL lets readers go on while one writer commits.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
    # Tests get a file too, not Django's shared in-memory database: with that, the live
    # server's request threads and the test share one connection, and a query from one
    # thread while another writes fails with "database table is locked" instead of waiting.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-connector.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL: str = env.str("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    # A database cache is shared by every process, which rate limits need.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "connector_cache",
        }
    }

# django-q2: the ORM broker by default, Redis when REDIS_URL is set.
Q_CLUSTER: dict = {
    "name": "connector",
    "workers": env.int("Q_WORKERS", default=2),
    # A task running longer is killed; every lease is longer than this (docs/architecture.md).
    "timeout": env.int("Q_TIMEOUT", default=120),
    "retry": env.int("Q_TIMEOUT", default=120) + 60,
    "max_attempts": 5,
    "catch_up": False,
    "save_limit": 1000,
    "label": "Background tasks",
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

AUTHENTICATION_BACKENDS = [
    # First: refuses passwords while ADMIN_PASSWORD_LOGIN is off, and a locked-out
    # account or address, before ModelBackend checks any password.
    "tenants.sign_in_defences.LockoutBackend",
    "social_core.backends.azuread_tenant.AzureADV2TenantOAuth2",
    "django.contrib.auth.backends.ModelBackend",
]
# Staff may sign in to the admin with a password; off by default in production, where
# staff sign in with Microsoft (their user must be marked staff).
ADMIN_PASSWORD_LOGIN: bool = env.bool("ADMIN_PASSWORD_LOGIN", default=DEBUG)
# Sign-in lockout (django-axes): failures per address and, separately, per account name.
AXES_FAILURE_LIMIT = env.int("SIGN_IN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("SIGN_IN_LOCKOUT_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]
AXES_RESET_ON_SUCCESS = True
AXES_ENABLE_ACCESS_FAILURE_LOG = True
AXES_LOCKOUT_CALLABLE = "tenants.sign_in_defences.locked_out"
AXES_VERBOSE = False  # its own log lines name the account; ours do not
LOGIN_URL = "tenants:sign-in"
LOGIN_REDIRECT_URL = "tenants:home"
LOGOUT_REDIRECT_URL = "tenants:sign-in"

# Social auth: a multi-tenant registration ("organizations"); the `tid` claim picks the Tenant.
SOCIAL_AUTH_AZUREAD_V2_TENANT_OAUTH2_TENANT_ID = "organizations"
SOCIAL_AUTH_AZUREAD_V2_TENANT_OAUTH2_AUTHORITY_HOST = env.str(
    "ENTRA_AUTHORITY_HOST", default="login.microsoftonline.com"
)
SOCIAL_AUTH_JSONFIELD_ENABLED = True
SOCIAL_AUTH_URL_NAMESPACE = "social"
SOCIAL_AUTH_LOGIN_ERROR_URL = "/sign-in/"
SOCIAL_AUTH_RAISE_EXCEPTIONS = False
SOCIAL_AUTH_REDIRECT_IS_HTTPS = not DEBUG
SOCIAL_AUTH_CLEAN_USERNAMES = True
# Keep nothing from the identity provider but the user's stable ID and its tenant.
SOCIAL_AUTH_AZUREAD_V2_TENANT_OAUTH2_EXTRA_DATA = [("tid", "tid"), ("oid", "oid")]
SOCIAL_AUTH_PIPELINE = (
    "social_core.pipeline.social_auth.social_details",
    "social_core.pipeline.social_auth.social_uid",
    "social_core.pipeline.social_auth.auth_allowed",
    "tenants.auth_pipeline.require_enabled_tenant",
    "social_core.pipeline.social_auth.social_user",
    "social_core.pipeline.user.get_username",
    "social_core.pipeline.user.create_user",
    "social_core.pipeline.social_auth.associate_user",
    # Not social-auth's load_extra_data: it always stores the access, refresh and id tokens.
    "tenants.auth_pipeline.keep_only_stable_ids",
    "tenants.auth_pipeline.accept_membership_invites",
    "tenants.auth_pipeline.remember_sign_in_tenant",
)

LANGUAGE_CODE = "en-us"
# The product's one date and time format, also where Django formats by itself (the admin).
FORMAT_MODULE_PATH = ["connector.formats"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env.path("STATIC_ROOT", default=str(VAR_DIR / "static"))
Path(STATIC_ROOT).mkdir(parents=True, exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# Sessions: 30 minutes idle, 12 hours in all (connector/sessions.py enforces both).
SESSION_IDLE_TIMEOUT = timedelta(minutes=env.int("SESSION_IDLE_MINUTES", default=30))
SESSION_ABSOLUTE_TIMEOUT = timedelta(hours=env.int("SESSION_ABSOLUTE_HOURS", default=12))
SESSION_COOKIE_AGE = int(SESSION_ABSOLUTE_TIMEOUT.total_seconds())
SESSION_COOKIE_HTTPONLY = True

# Transport security in production. Health probes stay reachable over plain HTTP
# inside the cluster.
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
CSRF_FAILURE_VIEW = "connector.views.csrf_failure"  # JSON under /api/
SECURE_HSTS_SECONDS = 0 if DEBUG else env.int("SECURE_HSTS_SECONDS", default=31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Content-Security-Policy (django-csp): this origin only, no inline scripts, styles or event
# handlers (templates load theirs from static files), no plugins, no framing. Browsers report
# what it refuses in their console; the browser tests fail on any such report.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [csp_constants.SELF],
        "script-src": [csp_constants.SELF],
        "style-src": [csp_constants.SELF],
        # Swagger UI's stylesheet draws its icons as data: URLs.
        "img-src": [csp_constants.SELF, "data:"],
        "object-src": [csp_constants.NONE],
        "base-uri": [csp_constants.SELF],
        "frame-ancestors": [csp_constants.NONE],
    }
}
if env.bool("CSP_REPORT_ONLY", default=False):  # to try a change of policy on a live site first
    CONTENT_SECURITY_POLICY_REPORT_ONLY, CONTENT_SECURITY_POLICY = CONTENT_SECURITY_POLICY, None
if env.bool("BEHIND_TLS_PROXY", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tenants.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Every API action must be declared in connector/api/access.py; an undeclared one is refused.
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticated",
        "connector.api.access.DeclaredAccess",
    ],
    "DEFAULT_PAGINATION_CLASS": "connector.api.pagination.StandardPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "connector.api.errors.api_exception_handler",
    "DEFAULT_THROTTLE_RATES": {
        "token_management": env.str("RATE_LIMIT_TOKENS", default="30/hour"),
        "api": env.str("RATE_LIMIT_API", default="2000/hour"),
    },
    "DEFAULT_THROTTLE_CLASSES": ["connector.api.throttles.ApiRateThrottle"],
}
# Sign-in attempts per client address (django-ratelimit syntax).
SIGN_IN_RATE = env.str("RATE_LIMIT_SIGN_IN", default="20/m")
# Unknown or revoked API tokens per client address before further calls get 429.
BAD_TOKEN_RATE = env.str("RATE_LIMIT_BAD_TOKENS", default="20/10m")
RATELIMIT_VIEW = "connector.views.rate_limited"

# /api/schema/ and /api/docs/ for anyone, or only for staff, members and API tokens (connector/api/schema.py).
API_DOCS_PUBLIC = env.bool("API_DOCS_PUBLIC", default=DEBUG)
SPECTACULAR_SETTINGS = {
    "TITLE": "Open EHR Connector API",
    "DESCRIPTION": (
        "Configure and read an organization's EHR connector. Authenticate with a session "
        "or with a per-organization API token: `Authorization: Bearer <token>`."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI from drf-spectacular-sidecar's static files, not a CDN (the CSP allows this origin only).
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Also used by the schema check of `manage.py check --deploy`.
    "DEFAULT_GENERATOR_CLASS": "connector.api.schema_generator.ScopeLiftedSchemaGenerator",
    # Each operation's error answers (400, 401, 403, 404, 429) in the one error shape, and
    # times of day as the API sends them (connector/api/schema_hooks.py).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "connector.api.schema_hooks.add_error_responses",
        "connector.api.schema_hooks.describe_local_times",
    ],
    # Choice sets whose field names ("kind", "role", "event_type") other components use for other choices.
    "ENUM_NAME_OVERRIDES": {
        "WebhookEventTypeEnum": "connector.webhooks.models.EventType",
        "VisitEventKindEnum": "connector.models.EventKind",
        "ParticipantRoleEnum": "connector.models.ParticipantRole",
        "GuestLinkKindEnum": "connector.models.GuestInvite.Kind",
        "RoleEnum": "tenants.models.Role",
        "VisitApiStateEnum": "connector.visits.selectors.API_STATES",
    },
}

EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="ehr-connector@localhost")
if env.str("EMAIL_URL", default=""):
    vars().update(env.email_url("EMAIL_URL"))

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
_HL7_PACKAGE = Path(importlib.util.find_spec("hl7").origin).parent  # found, not imported

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_id": {"()": "connector.request_id.RequestIdFilter"},
        "redact": {"()": "connector.log_redaction.RedactingFilter"},
    },
    "formatters": {"line": {"()": "connector.log_redaction.OneLineJsonFormatter"}},
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "filters": ["request_id", "redact"],
            "formatter": "line",
        }
    },
    "root": {"handlers": ["stdout"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # The Azure SDKs log every request (with URLs) at INFO.
        "azure": {"level": "WARNING"},
        # urllib3 logs every request's URL at DEBUG, with FHIR search parameters such as
        # Appointment?patient=...: quiet even at LOG_LEVEL=DEBUG (the redaction filter also covers them).
        "urllib3": {"level": "WARNING"},
        "requests": {"level": "WARNING"},
        # django-q2 logs every task it runs at INFO; failures still show.
        "django-q": {"level": env.str("LOG_LEVEL_TASKS", default="WARNING")},
        # The development server's access log: through the same filters, so links with tokens are redacted.
        "django.server": {"handlers": ["stdout"], "level": "INFO", "propagate": False},
        # python-hl7 logs a field's whole content (PHI) when it meets an escape sequence it
        # does not know. Its loggers are named after its files; they never emit anything.
        # Here rather than only in code: every logging set-up (django.setup() runs again
        # when runserver loads connector.wsgi) re-enables loggers it does not name.
        **{
            str(_HL7_PACKAGE / file_name): {"handlers": [], "level": logging.CRITICAL + 1, "propagate": False}
            for file_name in ("util.py", "containers.py")
        },
    },
}
# LOG_FILE: the same lines also appended to a file (CI scans the test run's with .ci/log_scan.py).
LOG_FILE = env.str("LOG_FILE", default="")
if LOG_FILE:
    LOGGING["handlers"]["file"] = {
        **LOGGING["handlers"]["stdout"],
        "class": "logging.FileHandler",
        "filename": LOG_FILE,
    }
    del LOGGING["handlers"]["file"]["stream"]
    LOGGING["root"]["handlers"].append("file")
    LOGGING["loggers"]["django.server"]["handlers"].append("file")
