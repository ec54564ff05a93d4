"""Fine-tuning a sparse model (SPLADE) as a training run like the others: from a sparse model or
from an embedding model's weights, registered as a sparse model, evaluated with method sparse."""

from __future__ import annotations

import pytest
from django.urls import reverse

from apps.runs.training import TrainingError, training_run_create
from tests.apps.runs.test_training import run_sync

pytestmark = pytest.mark.django_db

OPTIONS = {"loss": "splade", "batch_size": 2, "max_steps": 2, "logging_steps": 1,
           "save_steps": 10, "max_seq_length": 32}  # fmt: skip


@pytest.fixture
def splade(team, tiny_sparse_path):
    from apps.registry.services import embedding_model_register

    return embedding_model_register(team=team, name="tiny-splade", path=str(tiny_sparse_path))


@pytest.fixture
def pairs(team, tmp_path):
    import json

    from apps.datasets.services import dataset_import_training
    from tests.conftest import TINY_CORPUS

    rows = [{"anchor": f"about {d['title'] or 'it'}", "positive": d["text"]} for d in TINY_CORPUS]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return dataset_import_training(team=team, name="pairs", path=path).version


@pytest.mark.parametrize("start", ["sparse", "embedding"])
def test_a_splade_run_registers_a_sparse_model_and_evaluates_it_sparse(
    team, tiny_registered_model, splade, pairs, tiny_version, monkeypatch, start
):
    monkeypatch.setattr("workers.tasks.evaluation.evaluate.apply_async", lambda *a, **k: None)
    base = splade if start == "sparse" else tiny_registered_model
    run = training_run_create(team=team, base_model=base, train_version=pairs,
                              eval_version=tiny_version, eval_split="test", enqueue=False,
                              options=OPTIONS)  # fmt: skip
    run = run_sync(run)
    assert run.status == "succeeded", (run.human_error, run.log_tail[-2000:])
    model = run.result_model
    assert model.is_sparse and model.parent == base and run.result["role"] == "sparse"
    assert run.evaluation.method == "sparse" and run.evaluation.model == model


def test_sparse_and_dense_losses_and_bases_do_not_mix(team, splade, tiny_registered_model,
                                                      pairs, tiny_reranker_path):  # fmt: skip
    from apps.registry.services import embedding_model_register

    with pytest.raises(TrainingError, match="base_model: tiny-splade is a sparse model"):
        training_run_create(team=team, base_model=splade, train_version=pairs, enqueue=False,
                            options={**OPTIONS, "loss": "mnrl"})  # fmt: skip
    reranker = embedding_model_register(team=team, name="ce", path=str(tiny_reranker_path))
    with pytest.raises(TrainingError, match="base_model: ce is a reranker"):
        training_run_create(team=team, base_model=reranker, train_version=pairs, enqueue=False,
                            options=OPTIONS)  # fmt: skip
    with pytest.raises(TrainingError, match="method: the splade loss"):
        training_run_create(team=team, base_model=splade, train_version=pairs, enqueue=False,
                            options={**OPTIONS, "method": "lora"})  # fmt: skip


def test_the_training_form_offers_splade_and_its_settings(client, member, splade, pairs):
    client.force_login(member)
    page = client.get(reverse("runs:training_new")).content.decode()
    assert 'value="splade"' in page and 'data-when="loss=splade"' in page
    assert 'name="document_regularizer_weight"' in page
    form = {"base_model": splade.pk, "train_version": pairs.pk, "method": "full",
            "loss": "splade", "batch_size": 2, "max_steps": 4, "precision": "fp32",
            "save_steps": 2, "action": "preview"}  # fmt: skip
    preview = client.post(reverse("runs:training_new"), form, HTTP_HX_REQUEST="true")
    assert preview.status_code == 200 and "4 steps" in preview.content.decode()
    detail = client.get(reverse("registry:detail", args=[splade.pk])).content.decode()
    assert "fine-tune it with the splade loss" in detail and "not built" not in detail
