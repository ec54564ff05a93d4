from __future__ import annotations

import pytest

from tests.conftest import TINY_CORPUS, write_beir

# The tiny collection with metadata on every document, for filters.
LANGS = ["en", "en", "de", "en", "fr", "en", "de", "en"]
META_CORPUS = [
    {**row, "metadata": {"lang": LANGS[i], "year": 2000 + i, "featured": i % 3 == 0}}
    for i, row in enumerate(TINY_CORPUS)
]


@pytest.fixture
def meta_version(team, tmp_path):
    from apps.datasets.services import dataset_import_beir

    folder = write_beir(tmp_path / "meta-beir", corpus=META_CORPUS)
    return dataset_import_beir(team=team, name="tiny-meta", path=folder).version


def build_sync(*, team, model, version, index_type: str = "flat", params=None,
               precision: str = "auto"):  # fmt: skip
    """An index built in this process by the worker's own task code."""
    from apps.indexes.services import index_build_create
    from workers.tasks.indexing import build_index

    build = index_build_create(
        team=team,
        model=model,
        dataset_version=version,
        index_type=index_type,
        params=params or {},
        precision=precision,
        enqueue=False,
    )
    build_index.run(build.pk)
    build.refresh_from_db()
    assert build.status == "succeeded", build.error
    return build
