import os
import subprocess
import sys

from tests.conftest import REPO

PRODUCTION = {
    "SECRET_KEY": "x" * 60 + "production-secret-kept-out-of-the-repo",
    "DEBUG": "false",
    "ALLOWED_HOSTS": "embedhub.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://embedhub.example.com",
    "SECURE_SSL_REDIRECT": "true",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
    "SECURE_HSTS_PRELOAD": "true",
    "BEHIND_TLS_PROXY": "true",
}


def run_manage(*args, env):
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_passes_with_the_documented_production_variables(tmp_path):
    env = {**os.environ, **PRODUCTION, "VAR_DIR": str(tmp_path)}
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)  # set by the browser tests, never in production
    out = run_manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert out.returncode == 0, out.stdout + out.stderr


def test_debug_is_off_unless_asked(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DEBUG"}
    env["VAR_DIR"] = str(tmp_path)
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django;django.setup();from django.conf import settings;"
            "print(settings.DEBUG, settings.SECRET_KEY != '')",
        ],
        cwd=REPO,
        env={**env, "DJANGO_SETTINGS_MODULE": "embedhub.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.stdout.split() == ["False", "True"], out.stderr


def test_secret_key_file(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("from-a-file-" + "y" * 50)
    env = {k: v for k, v in os.environ.items() if k != "SECRET_KEY"}
    env.update(
        SECRET_KEY_FILE=str(secret),
        VAR_DIR=str(tmp_path),
        DJANGO_SETTINGS_MODULE="embedhub.settings",
    )
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django;django.setup();from django.conf import settings;"
            "print(settings.SECRET_KEY)",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.stdout.strip() == "from-a-file-" + "y" * 50


def test_broker_visibility_timeout_outlasts_the_longest_job(settings):
    from embedhub.celery import app

    assert settings.JOB_TIME_LIMIT > settings.JOB_SOFT_TIME_LIMIT
    if settings.REDIS_URL:
        visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
        assert visibility > settings.JOB_TIME_LIMIT
    conf = app.conf
    assert conf.task_serializer == "json" and conf.accept_content == ["json"]
    assert conf.task_acks_late and conf.worker_prefetch_multiplier == 1
    from workers.tasks.evaluation import evaluate

    assert evaluate.soft_time_limit == settings.JOB_SOFT_TIME_LIMIT
    assert evaluate.time_limit == settings.JOB_TIME_LIMIT
