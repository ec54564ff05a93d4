"""docker-compose.yml, the Dockerfile and the Procfile agree with the settings and each other.

Docker cannot run here, so the files are parsed and their commands and environments checked;
the settings are then loaded in a subprocess with each service's environment."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from urllib.parse import urlsplit

import pytest
import yaml

from embedhub.celery import QUEUES
from tests.conftest import REPO
from workers.serving.server import DEFAULT_PORT

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
APP_SERVICES = ["web", "worker-cpu", "worker-gpu", "beat", "search"]
REQUIRED_ENV = [
    "DATABASE_URL",
    "REDIS_URL",
    "ARTIFACTS_ROOT",
    "VAR_DIR",
    "SECRET_KEY",
    "DEBUG",
    "ALLOWED_HOSTS",
    "CSRF_TRUSTED_ORIGINS",
    "SEARCH_URL",
    "ENCODE_QUEUE",
    "SECURE_SSL_REDIRECT",
]


def command(service: str) -> list[str]:
    cmd = SERVICES[service]["command"]
    return cmd if isinstance(cmd, list) else shlex.split(cmd)


def resolve(value: str) -> str:
    """Compose's ${VAR:-default} / ${VAR:?err}, as if the variable were unset (SECRET_KEY set)."""
    value = str(value)
    value = re.sub(r"\$\{SECRET_KEY:\?[^}]*\}", "s" * 64, value)
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def env_of(service: str) -> dict[str, str]:
    return {k: resolve(v) for k, v in SERVICES[service]["environment"].items()}


def test_app_services_share_one_image_and_the_whole_environment():
    for name in APP_SERVICES:
        service = SERVICES[name]
        assert service["build"] == "." and service["image"] == "embedhub:latest", name
        missing = [v for v in REQUIRED_ENV if v not in service["environment"]]
        assert not missing, f"{name} lacks {missing}"
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"


def test_the_shared_env_block_holds_exactly_the_settings_names():
    assert set(COMPOSE["x-app-env"]) == set(REQUIRED_ENV)
    for name in APP_SERVICES:
        env = SERVICES[name]["environment"]
        assert {k: env[k] for k in REQUIRED_ENV} == COMPOSE["x-app-env"], name
    assert COMPOSE["x-app-env"]["ENCODE_QUEUE"] == "${ENCODE_QUEUE:-index}"
    assert resolve(COMPOSE["x-app-env"]["ENCODE_QUEUE"]) in QUEUES


def test_named_volumes_are_declared_and_used():
    declared = set(COMPOSE["volumes"])
    assert {"pgdata", "redisdata", "artifacts"} <= declared
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith((".", "/")) or source in declared, f"{name}: {source}"
    assert "pgdata:/var/lib/postgresql/data" in SERVICES["postgres"]["volumes"]
    assert "redisdata:/data" in SERVICES["redis"]["volumes"]


def test_urls_point_at_the_services_that_exist():
    pg = SERVICES["postgres"]["environment"]
    for name in APP_SERVICES:
        env = env_of(name)
        db = urlsplit(env["DATABASE_URL"])
        assert db.hostname in SERVICES and db.hostname == "postgres"
        assert (db.username, db.password, db.path.lstrip("/")) == (
            pg["POSTGRES_USER"],
            pg["POSTGRES_PASSWORD"],
            pg["POSTGRES_DB"],
        )
        assert urlsplit(env["REDIS_URL"]).hostname == "redis"
        search = urlsplit(env["SEARCH_URL"])
        assert search.hostname == "search" and search.port == DEFAULT_PORT
        mounts = [v.split(":")[1] for v in SERVICES[name]["volumes"]]
        for var in ("ARTIFACTS_ROOT", "VAR_DIR"):
            assert any(env[var].startswith(m) for m in mounts), f"{name}: {var} not on a volume"
    assert str(DEFAULT_PORT) in SERVICES["search"]["environment"]["SEARCH_BIND"]
    assert "redis-server" in command("redis") and "--appendonly" in command("redis")
    assert command("redis")[command("redis").index("--appendonly") + 1] == "yes"


def test_workers_cover_exactly_the_queues_of_the_celery_app():
    covered = []
    for name in ("worker-cpu", "worker-gpu"):
        cmd = command(name)
        assert cmd[:3] == ["celery", "-A", "embedhub"] and "worker" in cmd
        assert cmd[cmd.index("--prefetch-multiplier") + 1] == "1"
        covered += cmd[cmd.index("-Q") + 1].split(",")
    assert sorted(covered) == sorted(QUEUES)
    assert command("worker-gpu")[command("worker-gpu").index("-Q") + 1] == "gpu"
    gpu = SERVICES["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    device = gpu["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert device["count"] == "all"
    beat = command("beat")
    assert beat[:4] == ["celery", "-A", "embedhub", "beat"]
    assert beat[beat.index("--schedule") + 1].startswith(env_of("beat")["VAR_DIR"] + "/")


def test_web_migrates_then_serves_the_wsgi_app():
    text = " ".join(command("web"))
    assert text.index("manage.py migrate") < text.index("gunicorn embedhub.wsgi:application")
    assert (REPO / "embedhub" / "wsgi.py").exists()
    assert "8000:8000" in SERVICES["web"]["ports"]
    assert command("search") == ["python", "-m", "workers.serving"]
    assert (REPO / "workers" / "serving" / "__main__.py").exists()
    assert DEFAULT_PORT == 8001
    assert str(DEFAULT_PORT) in [str(p) for p in SERVICES["search"]["expose"]]
    probe = " ".join(SERVICES["search"]["healthcheck"]["test"])
    assert f"http://localhost:{DEFAULT_PORT}/health" in probe and "urllib" in probe


def test_every_compose_variable_is_documented():
    documented = set(re.findall(r"^#?\s*([A-Z_]+)=", (REPO / ".env.example").read_text(), re.M))
    names = {k for name in APP_SERVICES for k in SERVICES[name]["environment"]} - {"SEARCH_BIND"}
    assert names <= documented, names - documented


@pytest.mark.parametrize("service", ["web", "worker-cpu", "search"])
def test_settings_load_coherently_with_a_service_environment(service, tmp_path):
    env = {**os.environ, **env_of(service), "VAR_DIR": str(tmp_path), "STATIC_ROOT": str(tmp_path)}
    env["ARTIFACTS_ROOT"] = str(tmp_path / "artifacts")
    code = (
        "import json, django; django.setup(); from django.conf import settings as s;"
        "print(json.dumps([s.DATABASES['default']['ENGINE'], s.DATABASES['default']['HOST'],"
        " s.CELERY_BROKER_URL, s.SEARCH_URL, s.DEBUG, s.ENCODE_QUEUE]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**env, "DJANGO_SETTINGS_MODULE": "embedhub.settings"},
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    engine, host, broker, search, debug, queue = json.loads(out.stdout)
    assert (engine, host) == ("django.db.backends.postgresql", "postgres")
    assert broker == "redis://redis:6379/0" and search == "http://search:8001"
    assert debug is False and queue in QUEUES


def test_procfile_starts_a_worker_per_kind_of_work_with_the_reaper_once_and_search():
    procs = dict(
        line.split(":", 1)
        for line in (REPO / "Procfile").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert set(procs) == {"web", "quick", "worker", "trainer", "search"}
    queues, beats = {}, []
    for name in ("quick", "worker", "trainer"):
        argv = shlex.split(procs[name])
        assert os.path.basename(argv[0]) == "celery" and argv[1:4] == ["-A", "embedhub", "worker"]
        queues[name] = argv[argv.index("-Q") + 1].split(",")
        if "--beat" in argv:
            beats.append(name)
            assert argv[argv.index("--schedule") + 1].startswith("var/")
    # Every queue is served exactly once; uploads and Hub downloads (ingest, default) never wait
    # behind an encode (index) or a run (gpu), nor an encode behind a run; the beat runs once.
    served = [q for qs in queues.values() for q in qs]
    assert sorted(served) == sorted(QUEUES)
    assert set(queues["quick"]) == {"ingest", "default"}
    assert queues["worker"] == ["index"] and queues["trainer"] == ["gpu"]
    assert beats == ["quick"]
    assert "workers.serving" in procs["search"] and "runserver" in procs["web"]


def test_dockerfile_installs_the_hash_pinned_lock():
    text = (REPO / "Dockerfile").read_text()
    assert "pip install --require-hashes" in text and "-r requirements/base.txt" in text
    assert "torch==2.13.0+cpu" in (REPO / "requirements" / "base.txt").read_text()


# --- several hosts (docker-compose.hosts.yml) -------------------------------------------------
HOSTS = yaml.safe_load((REPO / "docker-compose.hosts.yml").read_text())["services"]
GIVEN = {
    "SECRET_KEY": "s" * 64,
    "SEARCH_TOKEN": "t" * 64,
    "ARTIFACTS_ROOT": "s3://embedhub-artifacts/prod",
    "AWS_ACCESS_KEY_ID": "key",
    "AWS_SECRET_ACCESS_KEY": "secret",
    "EMBEDHUB_DB_HOST": "10.0.0.5",
}


def host_env(service: str, given: dict[str, str]) -> dict[str, str]:
    """A service's environment as compose resolves it with ``given`` set."""

    def one(value: str) -> str:
        value = re.sub(r"\$\{([A-Z_]+):\?[^}]*\}", lambda m: given[m.group(1)], str(value))
        return re.sub(r"\$\{([A-Z_]+):-([^}]*)\}", lambda m: given.get(m.group(1), m.group(2)),
                      value)  # fmt: skip

    return {k: one(v) for k, v in HOSTS[service]["environment"].items()}


def test_hosts_share_only_postgres_redis_and_the_bucket():
    app = [name for name, s in HOSTS.items() if s.get("image") == "embedhub:latest"]
    assert set(app) == {"web", "worker-cpu", "beat", "search", "worker-gpu", "search-replica"}
    for name, service in HOSTS.items():
        assert service.get("profiles"), f"{name} would start on every host"
    for name in app:
        env = host_env(name, GIVEN)
        assert (
            env["ARTIFACTS_ROOT"].startswith("s3://")
            and env["ARTIFACTS_CACHE"] == "/data/artifacts"
        )
        # Each host's own disk: a named volume of that host, never a path shared between hosts.
        assert HOSTS[name]["volumes"] == ["cache:/data"], name
    profiles = {name: HOSTS[name]["profiles"] for name in app}
    assert profiles["worker-gpu"] == ["gpu-host"] and profiles["search-replica"] == ["search-host"]
    gpu = host_env("worker-gpu", GIVEN)
    assert urlsplit(gpu["DATABASE_URL"]).hostname == "10.0.0.5"
    assert urlsplit(gpu["REDIS_URL"]).hostname == "10.0.0.5"
    assert "-Q gpu" in " ".join(shlex.split(HOSTS["worker-gpu"]["command"]))
    assert shlex.split(HOSTS["search-replica"]["command"]) == ["python", "-m", "workers.serving"]
    on_web = host_env("web", {k: v for k, v in GIVEN.items() if k != "EMBEDHUB_DB_HOST"})
    assert urlsplit(on_web["DATABASE_URL"]).hostname == "postgres"


def test_hosts_variables_are_documented():
    documented = set(re.findall(r"^#?\s*([A-Z_]+)=", (REPO / ".env.example").read_text(), re.M))
    text = (REPO / "docker-compose.hosts.yml").read_text()
    used = set(re.findall(r"\$\{([A-Z_]+)[:}]", text)) - {"WEB_CONCURRENCY", "WEB_THREADS"}
    assert used <= documented, used - documented


def test_settings_with_a_bucket_work_in_the_local_cache(tmp_path):
    env = {**os.environ, **host_env("search-replica", GIVEN), "VAR_DIR": str(tmp_path),
           "ARTIFACTS_CACHE": str(tmp_path / "cache")}  # fmt: skip
    code = (
        "import json, django; django.setup(); from django.conf import settings as s;"
        "from workers.common.store import store; b = store();"
        "print(json.dumps([str(s.ARTIFACTS_ROOT), s.ARTIFACTS_STORE, b.bucket, b.prefix,"
        " str(b.local_root), str(s.SEARCH_MANIFEST)]))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         env={**env, "DJANGO_SETTINGS_MODULE": "embedhub.settings"},
                         timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    root, store_url, bucket, prefix, local, manifest = json.loads(out.stdout)
    assert root == local == str(tmp_path / "cache")
    assert (store_url, bucket, prefix) == (
        "s3://embedhub-artifacts/prod",
        "embedhub-artifacts",
        "prod",
    )
    assert manifest.startswith(root)
