from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.support import tiers
from tests.support.worker import start_worker, stop_worker

# The local S3-compatible server and a bucket per test (tests/support/s3.py).
pytest_plugins = ["tests.support.s3"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent


# --- tiers (tests/support/tiers.py) and pytest-xdist ---------------------------------------


def pytest_configure(config):
    from django.test.utils import override_settings

    # Hundreds of personas and sign-ins: PBKDF2's work factor (a quarter second a hash here) is
    # not what any test is about, and it was most of the unit tier's time. Django's testing
    # documentation advises a fast hasher; what is checked (a password, a lockout) stays.
    override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]).enable()
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        tiers.isolate_xdist_worker(worker)


def pytest_collection_modifyitems(config, items):
    problems = []
    for item in items:
        tiers.mark_by_use(item)
        problems += tiers.unmarked_starts(item)
    if problems:
        raise pytest.UsageError("tests in the wrong tier:\n" + "\n".join(problems))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    tiers.running = frozenset(m.name for m in item.iter_markers())
    reason = tiers.serial_under_xdist(item)
    if reason:
        pytest.fail(reason, pytrace=False)


def pytest_runtest_teardown(item):
    tiers.running = None


TINY_CORPUS = [
    {"_id": "d1", "title": "Cats", "text": "Cats are small domesticated carnivorous mammals."},
    {"_id": "d2", "title": "Dogs", "text": "Dogs were the first species to be domesticated."},
    {
        "_id": "d3",
        "title": "Python",
        "text": "Python is a programming language that lets you work quickly.",
    },
    {
        "_id": "d4",
        "title": "Rust",
        "text": "Rust is a language empowering everyone to build reliable software.",
    },
    {
        "_id": "d5",
        "title": "Coffee",
        "text": "Coffee is a brewed drink prepared from roasted coffee beans.",
    },
    {
        "_id": "d6",
        "title": "Tea",
        "text": "Tea is an aromatic beverage prepared by pouring hot water over leaves.",
    },
    {
        "_id": "d7",
        "title": "",
        "text": "The moon orbits the earth roughly once every twenty seven days.",
    },
    {
        "_id": "d8",
        "title": "Mars",
        "text": "Mars is the fourth planet from the sun and is red and dusty.",
    },
]
TINY_QUERIES = [
    {"_id": "q1", "text": "which animals were domesticated first"},
    {"_id": "q2", "text": "programming language for reliable software"},
    {"_id": "q3", "text": "hot drink made from leaves"},
    {"_id": "q4", "text": "red planet"},
    {"_id": "q5", "text": "an unjudged query about nothing"},
]
TINY_QRELS = {
    "test": [("q1", "d2", 1), ("q2", "d4", 2), ("q2", "d3", 1), ("q3", "d6", 1)],
    "train": [("q4", "d8", 1)],
}


def write_beir(folder: Path, *, corpus=None, queries=None, qrels=None) -> Path:
    """Write a BEIR folder; the arguments default to the tiny hand-written collection."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "qrels").mkdir(exist_ok=True)
    with open(folder / "corpus.jsonl", "w") as fh:
        for row in TINY_CORPUS if corpus is None else corpus:
            fh.write(json.dumps(row) + "\n")
    with open(folder / "queries.jsonl", "w") as fh:
        for row in TINY_QUERIES if queries is None else queries:
            fh.write(json.dumps(row) + "\n")
    for split, rows in (TINY_QRELS if qrels is None else qrels).items():
        with open(folder / "qrels" / f"{split}.tsv", "w") as fh:
            fh.write("query-id\tcorpus-id\tscore\n")
            for q, d, s in rows:
                fh.write(f"{q}\t{d}\t{s}\n")
    return folder


@pytest.fixture
def beir_folder(tmp_path) -> Path:
    return write_beir(tmp_path / "tiny-beir")


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    from tests.support.tiny_model import build_tiny_model

    sentences = [r["title"] + " " + r["text"] for r in TINY_CORPUS] + [
        q["text"] for q in TINY_QUERIES
    ]
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model") / "model", sentences=sentences)


@pytest.fixture(scope="session")
def tiny_reranker_path(tiny_model_path, tmp_path_factory) -> Path:
    """A cross-encoder folder made from the tiny BERT's weights (a random one-label head)."""
    from sentence_transformers import CrossEncoder

    folder = tmp_path_factory.mktemp("tiny-reranker") / "reranker"
    CrossEncoder(str(tiny_model_path), num_labels=1, local_files_only=True).save(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_sparse_path(tiny_model_path, tmp_path_factory) -> Path:
    """A SPLADE-style SparseEncoder folder (MLM head + max pooling) on the tiny BERT's weights."""
    from sentence_transformers import SparseEncoder
    from sentence_transformers.base.modules.transformer import Transformer
    from sentence_transformers.sparse_encoder.modules import SpladePooling

    from tests.support.tiny_model import raw_folder

    folder = tmp_path_factory.mktemp("tiny-sparse") / "splade"
    mlm = Transformer(str(raw_folder(tiny_model_path)), transformer_task="fill-mask")
    modules = [mlm, SpladePooling("max")]
    SparseEncoder(modules=modules, device="cpu").save(str(folder))
    return folder


@pytest.fixture(autouse=True)
def _artifacts(settings, tmp_path):
    settings.ARTIFACTS_ROOT = tmp_path / "artifacts"
    # Where the web publishes deployments, as ARTIFACTS_ROOT's default would put it: a test's
    # deploys never reach another test's (or another xdist worker's) search manifest.
    settings.SEARCH_MANIFEST = settings.ARTIFACTS_ROOT / "serving" / "deployments.json"
    # Every test sees a token's revocation at once; the cache has its own test.
    settings.API_TOKEN_CACHE_S = 0
    # Tests make identical jobs on purpose; one-click-one-job has its own tests.
    settings.JOB_DEDUPE_WINDOW_S = 0


# --- personas ------------------------------------------------------------------------------


@pytest.fixture
def team(db):
    from tests.factories import TeamFactory

    return TeamFactory(name="Acme Search", slug="acme")


@pytest.fixture
def other_team(db):
    from tests.factories import TeamFactory

    return TeamFactory(name="Other Co", slug="other")


def _persona(username: str, team, role: str):
    from tests.factories import MembershipFactory, UserFactory

    return MembershipFactory(team=team, user=UserFactory(username=username), role=role).user


@pytest.fixture
def owner(team):
    return _persona("owner", team, "admin")


@pytest.fixture
def member(team):
    return _persona("member", team, "member")


@pytest.fixture
def viewer(team):
    return _persona("viewer", team, "viewer")


@pytest.fixture
def outsider(other_team):
    return _persona("outsider", other_team, "admin")


@pytest.fixture
def tiny_registered_model(team, tiny_model_path):
    from apps.registry.services import embedding_model_register

    return embedding_model_register(team=team, name="tiny", path=str(tiny_model_path))


@pytest.fixture
def evaluation(team, tiny_registered_model, tiny_version):
    """A pending evaluation of the tiny model on the tiny collection, not enqueued."""
    from apps.runs.services import evaluation_create

    return evaluation_create(
        team=team,
        model=tiny_registered_model,
        dataset_version=tiny_version,
        split="test",
        enqueue=False,
    )


@pytest.fixture
def tiny_version(team, beir_folder):
    from apps.datasets.services import dataset_import_beir

    return dataset_import_beir(team=team, name="tiny", path=beir_folder).version


@pytest.fixture
def celery_worker_process(transactional_db, settings, tmp_path):
    """A worker process on the same PostgreSQL test database and Redis as this test."""
    from django.db import connection

    if not os.environ.get("REDIS_URL"):
        pytest.fail("REDIS_URL is not set: run the suite with ./bin/test (real Redis needed)")
    db = connection.settings_dict
    if db["ENGINE"] != "django.db.backends.postgresql":
        pytest.fail("DATABASE_URL must name PostgreSQL: run the suite with ./bin/test")
    import redis

    redis.Redis.from_url(os.environ["REDIS_URL"]).flushdb()  # no stale messages from other runs
    url = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "ARTIFACTS_ROOT": str(settings.ARTIFACTS_ROOT),
        "JOB_PROGRESS_INTERVAL": "0.2",
        "CONN_MAX_AGE": "0",
    }
    log = tmp_path / "worker.log"
    proc = start_worker(env, log)
    proc.log, proc.env = log, env
    yield proc
    stop_worker(proc)


@pytest.fixture(scope="module")
def search_process(tmp_path_factory):
    """One real search process per module (it keeps the tiny encoder warm between tests); a
    test points the web at it and at its manifest with ``serving``."""
    from tests.support.search import start_search_process, stop_search_process

    sp = start_search_process(tmp_path_factory.mktemp("search"))
    yield sp
    stop_search_process(sp)


@pytest.fixture
def serving(search_process, settings):
    from tests.support.search import reset_search_process

    settings.SEARCH_URL = search_process.url
    settings.SEARCH_MANIFEST = search_process.manifest
    yield search_process
    reset_search_process(search_process)
