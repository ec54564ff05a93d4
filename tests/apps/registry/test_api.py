"""``/api/v1/models``: what a program needs to encode like the model was trained, and lineage."""

from __future__ import annotations

import pytest
from django.test import Client

from apps.accounts.services import api_token_create
from apps.registry.models import EmbeddingModel
from apps.registry.services import embedding_model_register
from apps.runs.models import TrainingRun

pytestmark = pytest.mark.django_db


def test_models_list_and_detail_with_encoding_settings_and_lineage(
    team, viewer, tiny_model_path, tiny_version
):
    base = embedding_model_register(
        team=team, name="base", path=str(tiny_model_path), query_prefix="query: "
    )
    child = EmbeddingModel.objects.create(
        team=team,
        name="base-ft",
        kind=EmbeddingModel.Kind.FINETUNED,
        source=base.source,
        source_ref="run 1",
        path=base.path,
        layout=base.layout,
        dimension=base.dimension,
        max_seq_length=base.max_seq_length,
        pooling=base.pooling,
        query_prefix=base.query_prefix,
        parent=base,
    )
    run = TrainingRun.objects.create(
        team=team, name="r", base_model=base, train_version=tiny_version, result_model=child
    )
    _, raw = api_token_create(team=team, user=viewer, name="ci")
    client = Client()
    auth = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}

    listed = client.get("/api/v1/models", **auth).json()["models"]
    assert [(m["name"], m["parent"], m["training_run"]) for m in listed] == [
        ("base", None, None),
        ("base-ft", base.pk, run.pk),
    ]
    detail = client.get(f"/api/v1/models/{base.pk}", **auth).json()
    assert detail["dimension"] == base.dimension > 0
    assert (detail["pooling"], detail["normalize"]) == (base.pooling, base.normalize)
    assert (detail["query_prefix"], detail["document_prefix"]) == ("query: ", "")
    assert detail["max_seq_length"] == base.max_seq_length
    assert (detail["kind"], detail["source"]) == ("base", "folder")
    assert "path" not in detail  # the server's file system stays on the server
    assert client.get("/api/v1/models/999999", **auth).status_code == 404
