"""The Merge lab: a merge job end to end through its task (a registered merged model whose
lineage names every parent, the method and the weights), the weight search with its dev and
test figures, the greedy soup, the command, the pages and the API, and the refusals (another
team's model, a reranker, another architecture, a field that does not fit the method)."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command

from apps.registry.models import EmbeddingModel, MergeJob
from apps.registry.services import MergeError, embedding_model_register, merge_job_create
from apps.runs.models import Evaluation
from tests.workers.ml.test_merge import perturbed
from workers.common.configs.merge import MergeConfig

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="session")
def tuned_paths(tiny_model_path, tmp_path_factory) -> list:
    """Two "fine-tunes" of the tiny model: its weights moved by seeded noise."""
    root = tmp_path_factory.mktemp("tuned")
    return [perturbed(tiny_model_path, root / f"tuned-{seed}", seed=seed) for seed in (1, 2)]


@pytest.fixture
def tuned(team, tuned_paths, tiny_registered_model) -> list[EmbeddingModel]:
    return [embedding_model_register(team=team, name=f"tuned-{i + 1}", path=str(p))
            for i, p in enumerate(tuned_paths)]  # fmt: skip


def make(team, **values) -> MergeJob:
    return merge_job_create(team=team, config=MergeConfig(**values), enqueue=False)


def run_job(job: MergeJob) -> MergeJob:
    from workers.tasks.merge import merge

    merge.run(job.pk)
    job.refresh_from_db()
    assert job.status == "succeeded", (job.human_error, job.error)
    return job


def evaluate_pending() -> None:
    from workers.tasks.evaluation import evaluate

    for pk in Evaluation.objects.filter(status="pending").values_list("pk", flat=True):
        evaluate.run(pk)


def weights_of(folder) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(folder / "model.safetensors"))


def test_a_soup_is_registered_with_its_lineage_and_compared_with_each_parent(
    team, tuned, tiny_version, client, member
):
    a, b = tuned
    job = run_job(make(team, models=[a.pk, b.pk], method="soup",
                       evaluate_version=tiny_version.pk))  # fmt: skip
    assert job.test_split == "test" and job.dev_split == ""
    merged = job.result_model
    assert (merged.kind, merged.parent, merged.team) == ("merged", a, team)
    assert merged.dimension == a.dimension and merged.pooling == a.pooling
    lineage = merged.merge
    assert lineage["job"] == job.pk and lineage["method"] == "soup"
    assert [(p["id"], p["name"], p["weight"]) for p in lineage["parents"]] == [
        (a.pk, "tuned-1", 0.5), (b.pk, "tuned-2", 0.5)]  # fmt: skip
    # The weights are the parents' average, in a folder every encode path loads.
    wa, wb, wm = (weights_of(Path(m.path)) for m in (a, b, merged))
    key = next(k for k, v in wa.items() if v.ndim == 2)
    assert np.allclose(wm[key], (wa[key] + wb[key]) / 2, atol=1e-6)
    # The merge and both parents are evaluated on test; the page pairs them once they ran.
    evaluations = job.result["evaluations"]
    assert set(evaluations) == {"merge", str(a.pk), str(b.pk)}
    evaluate_pending()
    assert Evaluation.objects.filter(status="succeeded").count() == 3
    client.force_login(member)
    page = client.get(f"/models/merges/{job.pk}/").content.decode()
    assert 'id="merge-vs-parents"' in page and 'id="merge-verdict"' in page
    compare = f"/runs/compare/?e={evaluations['merge']}&amp;e={evaluations[str(a.pk)]}"
    assert compare in page or f"e={evaluations['merge']}&amp;" in page
    assert "tuned-1" in page and "tuned-2" in page
    model_page = client.get(f"/models/{merged.pk}/").content.decode()
    assert 'id="merged-by"' in model_page and f"/models/merges/{job.pk}/" in model_page
    assert "(weight 0.500)" in model_page
    # A parent used by a merge is not deleted from under it.
    from apps.registry.services import ModelInUse, embedding_model_delete

    with pytest.raises(ModelInUse, match="merge job"):
        embedding_model_delete(model=b)


def test_the_weight_search_records_dev_and_test_per_weight_and_keeps_the_best_on_dev(
    team, tuned, tiny_registered_model, tiny_version, client, member
):
    tuned_model, base = tuned[0], tiny_registered_model
    # The base encodes differently from the fine-tune: the merge takes the fine-tune's way.
    base.max_seq_length = 6
    base.save(update_fields=["max_seq_length"])
    job = run_job(make(team, models=[tuned_model.pk], base=base.pk, method="linear",
                       search=True, grid=[1, 0, 0.5], evaluate_version=tiny_version.pk,
                       dev_split="train", test_split="test"))  # fmt: skip
    search = job.result["search"]
    assert [p["weight"] for p in search["points"]] == [0.0, 0.5, 1.0]
    assert all(0 <= p["dev"] <= 1 and 0 <= p["test"] <= 1 for p in search["points"])
    best = max(search["points"], key=lambda p: p["dev"])
    assert search["chosen"] == best["weight"] and job.result["dev"]["ndcg@10"] == best["dev"]
    # Every point is encoded as the merged model is (the first parent's settings, here not
    # the base's), so the chosen point's test figure is the merge's own test evaluation.
    evaluate_pending()
    merge_eval = Evaluation.objects.get(pk=job.result["evaluations"]["merge"])
    assert merge_eval.metrics["ndcg@10"] == pytest.approx(
        next(p["test"] for p in search["points"] if p["weight"] == search["chosen"]), abs=1e-6
    )
    lineage = job.result_model.merge
    assert lineage["parents"][0]["weight"] == search["chosen"]
    assert lineage["base"] == {"id": base.pk, "name": base.name, "weight": 1 - search["chosen"]}
    # One kept folder; the other candidates are gone.
    folder = Path(job.result_model.path)
    assert folder.is_dir() and [p.name for p in folder.parent.iterdir()] == [folder.name]
    client.force_login(member)
    page = client.get(f"/models/merges/{job.pk}/").content.decode()
    assert 'id="weight-chart"' in page and page.count("<polyline") == 2
    assert 'id="weight-table"' in page


def test_greedy_soup_adds_a_model_only_if_dev_does_not_drop(team, tuned, tiny_version):
    a, b = tuned
    job = run_job(make(team, models=[a.pk, b.pk], method="greedy_soup",
                       evaluate_version=tiny_version.pk, dev_split="train"))  # fmt: skip
    greedy = job.result["greedy"]
    steps = greedy["steps"]
    assert len(steps) == 2 and steps[0]["kept"] and steps[0]["own_dev"] >= steps[1]["own_dev"]
    assert steps[1]["kept"] == (steps[1]["soup_dev"] >= steps[0]["soup_dev"])
    assert job.result["dev"]["ndcg@10"] == max(s["soup_dev"] for s in steps if s["kept"])
    weights = [p["weight"] for p in job.result_model.merge["parents"]]
    assert sorted(weights) == ([0.5, 0.5] if steps[1]["kept"] else [0.0, 1.0])


@pytest.mark.parametrize("method, extra", [
    ("ties", ["--density", "0.5"]),
    ("dare", ["--drop-rate", "0.3", "--seed", "4"]),
    ("model_stock", []),
    ("slerp", ["--weights", "1,3"]),
])  # fmt: skip
def test_the_command_merges_on_task_vectors(tuned, tiny_registered_model, method, extra):
    a, b = tuned
    models = f"{a.pk},{b.pk}" if method != "slerp" else str(a.pk)
    out = io.StringIO()
    call_command("merge", "--models", models, "--base", str(tiny_registered_model.pk),
                 "--method", method, *extra, "--sync", stdout=out)  # fmt: skip
    done = json.loads(out.getvalue())
    assert done["status"] == "succeeded", done
    merged = EmbeddingModel.objects.get(pk=done["model"])
    assert merged.kind == "merged" and merged.parent == tiny_registered_model
    assert done["lineage"]["method"] == method
    assert done["lineage"]["base"]["id"] == tiny_registered_model.pk
    if method == "model_stock":
        assert 0 <= done["lineage"]["options"]["ratio_mean"] <= 1
    if method == "slerp":
        assert done["lineage"]["parents"][0]["weight"] == 0.25
        assert done["lineage"]["base"]["weight"] == 0.75


def test_bad_input_names_the_field(team, tuned, tiny_registered_model, tiny_version,
                                   tiny_reranker_path, other_team, tiny_model_path):  # fmt: skip
    a, b = tuned
    base = tiny_registered_model

    def refused(**values) -> str:
        with pytest.raises(MergeError) as exc:
            make(team, **values)
        return str(exc.value)

    assert refused(models=[a.pk, b.pk], method="ties").startswith("base: ties works on task")
    assert refused(models=[a.pk], method="soup").startswith("models: soup needs at least two")
    assert refused(models=[a.pk, b.pk], base=base.pk, method="slerp").startswith(
        "models: SLERP takes exactly two end points"
    )
    assert refused(models=[a.pk, b.pk], method="linear", weights=[1, 2, 3]).startswith(
        "weights: 3 given"
    )
    assert refused(models=[a.pk, a.pk]).startswith("models: a model is listed twice")
    assert refused(models=[a.pk, b.pk], method="linear", search=True,
                   evaluate_version=tiny_version.pk).startswith("dev_split:")  # fmt: skip
    assert refused(models=[a.pk, b.pk], method="greedy_soup").startswith("dev_split:")
    assert refused(models=[a.pk, b.pk], evaluate_version=tiny_version.pk,
                   test_split="nope").startswith("test_split: ")  # fmt: skip
    assert refused(models=[a.pk, b.pk], name="tiny").startswith("name: ")
    reranker = embedding_model_register(team=team, name="rr", path=str(tiny_reranker_path))
    assert refused(models=[a.pk, reranker.pk]).startswith("models: rr is a reranker")
    theirs = embedding_model_register(team=other_team, name="theirs", path=str(tiny_model_path))
    assert refused(models=[a.pk, theirs.pk]) == f"models: no model {theirs.pk} in your team"
    assert not MergeJob.objects.exists()


def test_another_architecture_fails_naming_the_first_tensor_that_differs(
    team, tuned, tuned_paths, tmp_path
):
    from safetensors.torch import load_file, save_file

    folder = shutil.copytree(tuned_paths[0], tmp_path / "renamed")
    tensors = load_file(str(folder / "model.safetensors"))
    name = sorted(tensors)[0]
    tensors["renamed.weight"] = tensors.pop(name)
    save_file(tensors, str(folder / "model.safetensors"))
    other = embedding_model_register(team=team, name="renamed", path=str(folder))
    job = make(team, models=[tuned[0].pk, other.pk])
    from workers.tasks.merge import merge

    merge.run(job.pk)
    job.refresh_from_db()
    assert job.status == "failed" and job.result_model is None
    assert f"renamed has no tensor {name} that tuned-1 has" in job.human_error
    assert "not the same architecture" in job.human_error


def test_the_merge_form_starts_one_and_another_teams_model_is_not_found(
    client, member, viewer, tuned, other_team, tiny_model_path, tiny_version
):
    a, b = tuned
    client.force_login(member)
    page = client.get(f"/models/{a.pk}/").content.decode()
    assert f'href="/models/merge/?models={a.pk}"' in page
    assert 'id="merge-lab"' in client.get("/models/").content.decode()
    form = client.get(f"/models/merge/?models={a.pk}").content.decode()
    assert 'id="merge-form"' in form
    assert re.search(rf'value="{a.pk}"[^>]*checked', form)
    assert not re.search(rf'value="{b.pk}"[^>]*checked', form)
    data = {"models": [str(a.pk), str(b.pk)], "method": "linear", "weights": "3, 1",
            "evaluate_version": str(tiny_version.pk), "grid": "0,0.5,1", "density": "0.2",
            "scale": "1", "drop_rate": "0.5", "seed": "0"}  # fmt: skip
    r = client.post("/models/merge/", data)
    job = MergeJob.objects.get()
    assert r.status_code == 302 and r["Location"] == f"/models/merges/{job.pk}/"
    assert job.model_ids == [a.pk, b.pk] and job.params["weights"] == [3.0, 1.0]
    assert job.celery_task_name == "workers.tasks.merge.merge"
    from django.conf import settings

    from embedhub.celery import _route

    assert _route(job.celery_task_name, (), {}, {})["queue"] == settings.ENCODE_QUEUE
    assert f"/models/merges/{job.pk}/" in client.get("/jobs/").content.decode()
    r = client.post("/models/merge/", {**data, "method": "ties"})
    assert r.status_code == 200 and "base: ties works on task vectors" in r.content.decode()
    theirs = embedding_model_register(team=other_team, name="theirs", path=str(tiny_model_path))
    r = client.post("/models/merge/", {**data, "models": [str(a.pk), str(theirs.pk)]})
    assert r.status_code == 404
    client.force_login(viewer)
    assert client.post("/models/merge/", data).status_code == 403
    assert MergeJob.objects.count() == 1
    job_page = client.get(f"/models/merges/{job.pk}/")
    assert job_page.status_code == 200 and 'id="merge-status"' in job_page.content.decode()
    assert 'hx-get="/models/merges/' in job_page.content.decode()  # polls while pending


def test_the_api_starts_one_and_scopes_it(client, team, member, viewer, outsider, other_team,
                                         tuned, tiny_version, tiny_model_path):  # fmt: skip
    from apps.accounts.services import api_token_create

    def auth(user, t):
        return {"HTTP_AUTHORIZATION": f"Bearer {api_token_create(user=user, team=t, name='t')[1]}"}

    a, b = tuned
    mine, looking, theirs = auth(member, team), auth(viewer, team), auth(outsider, other_team)
    body = {"models": [a.pk, b.pk], "method": "soup", "evaluate_version": tiny_version.pk}
    r = client.post("/api/v1/merges", body, content_type="application/json", **mine)
    assert r.status_code == 201, r.content
    made = r.json()
    assert made["status"] == "pending" and made["models"] == [a.pk, b.pk]
    assert made["test_split"] == "test" and r["Location"] == f"/api/v1/merges/{made['id']}"
    assert "/" not in json.dumps({k: v for k, v in made.items() if k != "created_at"})
    assert client.get(f"/api/v1/merges/{made['id']}", **mine).json()["id"] == made["id"]
    assert client.get(f"/api/v1/merges/{made['id']}", **theirs).status_code == 404
    # Another team's models cannot be merged in: they read as missing.
    assert client.post("/api/v1/merges", body, content_type="application/json",
                       **theirs).status_code == 404  # fmt: skip
    own = embedding_model_register(team=other_team, name="theirs", path=str(tiny_model_path))
    r = client.post("/api/v1/merges", {**body, "models": [a.pk, own.pk]},
                    content_type="application/json", **mine)  # fmt: skip
    assert r.status_code == 404
    assert client.post("/api/v1/merges", body, content_type="application/json",
                       **looking).status_code == 403  # fmt: skip
    r = client.post("/api/v1/merges", {**body, "path": "/etc"}, content_type="application/json",
                    **mine)  # fmt: skip
    assert r.status_code == 422 and "path" in json.dumps(r.json())
    r = client.post("/api/v1/merges", {**body, "method": "dare"},
                    content_type="application/json", **mine)  # fmt: skip
    assert r.status_code == 422 and r.json()["error"].startswith("base: dare works on task")
    schema = client.get("/api/openapi.json").json()["components"]["schemas"]["MergeIn"]
    assert {
        "models",
        "base",
        "method",
        "weights",
        "search",
        "grid",
        "density",
        "drop_rate",
        "seed",
        "evaluate_version",
        "dev_split",
        "test_split",
    } <= set(schema["properties"])
