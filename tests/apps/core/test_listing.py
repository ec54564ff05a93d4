"""Lists that scale (apps/core/listing.py): every list page searches, filters, sorts and pages
on the server; a URL's unknown value is ignored; an htmx request gets just the table and pager;
another team's rows never show."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.core import listing as listing_module

pytestmark = pytest.mark.django_db


def _model(team, name, *, kind="base", role="embedding", parameters=None, age_days=0):
    from apps.registry.models import EmbeddingModel

    return EmbeddingModel.objects.create(
        team=team, name=name, kind=kind, role=role, source="folder", source_ref=name,
        path="/nowhere", layout="sentence-transformers", dimension=64, max_seq_length=64,
        parameters=parameters, created_at=timezone.now() - timedelta(days=age_days),
    )  # fmt: skip


def _version(team, name, *, kind="retrieval", number=1, age_days=0):
    from apps.datasets.models import Dataset, DatasetVersion

    dataset, _ = Dataset.objects.get_or_create(
        team=team, name=name, defaults={"created_at": timezone.now() - timedelta(days=age_days)}
    )
    return DatasetVersion.objects.create(
        dataset=dataset, number=number, kind=kind, content_hash=f"{name}-{number}"
    )


def _fragment(client, url, target, **query) -> str:
    r = client.get(url, query, HTTP_HX_REQUEST="true", HTTP_HX_TARGET=target)
    assert r.status_code == 200 and "HX-Request" in r["Vary"]
    html = r.content.decode()
    assert html.lstrip().startswith(f'<div id="{target}">') and "<html" not in html
    return html


def _ids(html: str, pattern: str) -> list[int]:
    return [int(n) for n in re.findall(pattern, html)]


def test_the_models_list_searches_filters_sorts_and_stays_in_its_team(
    client, member, team, other_team
):
    alpha = _model(team, "alpha-small", parameters=10, age_days=3)
    beta = _model(team, "beta-large", kind="finetuned", parameters=300, age_days=2)
    gamma = _model(team, "gamma-rerank", role="reranker", parameters=None, age_days=1)
    theirs = _model(other_team, "alpha-theirs")
    client.force_login(member)

    def listed(**query) -> list[int]:
        html = _fragment(client, "/models/", "model-list", **query)
        assert f"/models/{theirs.pk}/" not in html
        return _ids(html, r'<td><a href="/models/(\d+)/"')

    assert listed() == [alpha.pk, beta.pk, gamma.pk]  # by name
    assert listed(q="ALPHA") == [alpha.pk]  # case-insensitive, the other team's alpha hidden
    assert listed(q="a large") == [beta.pk]  # every word must match
    assert listed(kind="finetuned") == [beta.pk]
    assert listed(role="reranker") == [gamma.pk]
    assert listed(sort="new") == [gamma.pk, beta.pk, alpha.pk]
    assert listed(sort="params") == [beta.pk, alpha.pk, gamma.pk]  # unknown size last
    assert listed(sort="params_asc") == [alpha.pk, beta.pk, gamma.pk]
    # A URL's unknown values are ignored, never an error.
    assert listed(kind="nonsense", role="x", sort="drop table", page="abc") == listed()
    assert listed(q="zzz") == []
    page = client.get("/models/", {"q": "zzz"}).content.decode()
    assert "No model matches." in page and "0 models match" in page
    assert "alpha-theirs" not in client.get("/models/").content.decode()


def test_the_list_page_has_the_search_box_the_filters_and_sortable_headers(client, member, team):
    _model(team, "alpha")
    client.force_login(member)
    page = client.get("/models/", {"kind": "base", "sort": "new"}).content.decode()
    assert 'id="model-filters"' in page and 'hx-target="#model-list"' in page
    assert 'hx-push-url="true"' in page and "<noscript><button>Filter</button></noscript>" in page
    box = re.search(r'<input type="search"[^>]*>', page)[0]
    assert 'name="q"' in box and 'hx-trigger="input changed delay:300ms, search"' in box
    assert 'hx-trigger="change"' in page  # the selects
    assert 'value="base" selected' in page and 'value="new" selected' in page
    # The current sort's header flips it; both href and hx-get carry the filters.
    header = re.search(r'<th class="sorted"[^>]*><a href="([^"]*)" hx-get="([^"]*)"', page)
    assert header and header[1] == header[2] == "?kind=base&amp;sort=old"
    assert 'href="?kind=base&amp;sort=params"' in page
    # A full page load with htmx (the nav's hx-select="main") is the whole page.
    nav = client.get("/models/", HTTP_HX_REQUEST="true").content.decode()
    assert "<html" in nav and 'id="model-filters"' in nav


def test_a_long_list_pages_and_the_pager_keeps_the_query(client, member, team, monkeypatch):
    monkeypatch.setattr(listing_module, "PER_PAGE", 2)
    made = [_model(team, f"m{i}", kind="finetuned" if i % 2 else "base") for i in range(5)]
    _model(team, "x-other")
    client.force_login(member)
    first = _fragment(client, "/models/", "model-list", q="m")
    assert _ids(first, r'<td><a href="/models/(\d+)/"') == [made[0].pk, made[1].pk]
    assert "page 1 of 3 (5 models)" in first
    assert 'href="?q=m&amp;page=2"' in first and 'hx-get="?q=m&amp;page=2"' in first
    second = _fragment(client, "/models/", "model-list", q="m", page="2")
    assert _ids(second, r'<td><a href="/models/(\d+)/"') == [made[2].pk, made[3].pk]
    assert 'href="?q=m&amp;page=1"' in second and 'href="?q=m&amp;page=3"' in second
    last = _fragment(client, "/models/", "model-list", q="m", page="99")  # past the end
    assert _ids(last, r'<td><a href="/models/(\d+)/"') == [made[4].pk]
    # The htmx fragment also sets the form's sort menu (a header may have changed it).
    assert 'id="model-sort" hx-swap-oob="true"' in last
    odd = _fragment(client, "/models/", "model-list", kind="finetuned")
    assert "2 models match" in odd and "page 1" not in odd


def test_the_training_runs_list(client, member, team, other_team):
    from apps.runs.models import TrainingRun

    base, other_base = _model(team, "base"), _model(team, "other-base")
    version = _version(team, "pairs", kind="training")

    def run(name, *, method="full", loss="mnrl", status="pending", model=base, t=team, age=0):
        return TrainingRun.objects.create(
            team=t, name=name, base_model=model, train_version=version, status=status,
            config={"method": method, "loss": loss},
            created_at=timezone.now() - timedelta(days=age),
        )  # fmt: skip

    a = run("scifact lora", method="lora", age=3)
    b = run("nfcorpus gist", loss="gist", status="succeeded", age=2)
    c = run("scifact full", model=other_base, age=1)
    theirs = run("scifact theirs", t=other_team, model=_model(other_team, "b"))
    client.force_login(member)

    def listed(**query) -> list[int]:
        html = _fragment(client, "/runs/training/", "run-list", **query)
        assert f"/runs/training/{theirs.pk}/" not in html
        return _ids(html, r'<td><a href="/runs/training/(\d+)/"')

    assert listed() == [c.pk, b.pk, a.pk]  # newest first
    assert listed(sort="old") == [a.pk, b.pk, c.pk]
    assert listed(sort="name") == [b.pk, c.pk, a.pk]
    assert listed(q="scifact") == [c.pk, a.pk]
    assert listed(method="lora") == [a.pk]
    assert listed(loss="gist") == [b.pk]
    assert listed(status="succeeded") == [b.pk]
    assert listed(base=str(other_base.pk)) == [c.pk]
    assert listed(base=str(theirs.base_model_id)) == listed()  # another team's model: ignored
    assert listed(method="qlora", loss="?", status="lost") == listed()
    page = client.get("/runs/training/").content.decode()
    assert 'id="runs"' in page and 'id="new-run"' in page and 'id="run-filters"' in page
    assert "scifact theirs" not in page


def test_the_datasets_list(client, member, team, other_team):
    from apps.datasets.models import Dataset

    _version(team, "scifact", age_days=3)
    _version(team, "scifact", kind="training", number=2)
    _version(team, "nfcorpus", age_days=1)
    _version(team, "pairs only", kind="training", age_days=2)
    _version(other_team, "scifact mine")
    ids = {d.name: d.pk for d in Dataset.objects.all()}
    client.force_login(member)

    def listed(**query) -> list[str]:
        html = _fragment(client, "/datasets/", "dataset-list", **query)
        assert f"/datasets/{ids['scifact mine']}/" not in html
        names = {pk: name for name, pk in ids.items()}
        return [names[pk] for pk in _ids(html, r'<td><a href="/datasets/(\d+)/"')]

    assert listed() == ["nfcorpus", "pairs only", "scifact"]
    assert listed(q="sci") == ["scifact"]
    assert listed(kind="training") == ["pairs only", "scifact"]
    assert listed(kind="retrieval") == ["nfcorpus", "scifact"]
    assert listed(sort="new") == ["nfcorpus", "pairs only", "scifact"]
    assert listed(sort="old") == ["scifact", "pairs only", "nfcorpus"]
    assert listed(kind="other", sort="size") == listed()
    page = client.get("/datasets/", {"q": "sci"}).content.decode()
    assert 'value="sci"' in page and "scifact mine" not in page


def test_the_index_builds_list(client, member, team, other_team):
    from apps.indexes.models import IndexBuild

    model, other_model = _model(team, "minilm"), _model(team, "bge")
    version = _version(team, "scifact")

    def build(index_type, *, recall=None, status="succeeded", m=model, t=team, age=0):
        metrics = {} if recall is None else {"recall_at_10": recall}
        return IndexBuild.objects.create(
            team=t, model=m, dataset_version=version, index_type=index_type, status=status,
            metrics=metrics, created_at=timezone.now() - timedelta(days=age),
        )  # fmt: skip

    flat = build("flat", recall=1.0, age=3)
    hnsw = build("hnsw", recall=0.9, m=other_model, age=2)
    failed = build("ivf_pq", status="failed", age=1)
    theirs = build("flat", t=other_team, m=_model(other_team, "x"))
    client.force_login(member)

    def listed(**query) -> list[int]:
        html = _fragment(client, "/indexes/", "build-list", **query)
        assert f'href="/indexes/{theirs.pk}/"' not in html
        return _ids(html, r'<td><a href="/indexes/(\d+)/"')

    assert listed() == [failed.pk, hnsw.pk, flat.pk]
    assert listed(sort="recall") == [flat.pk, hnsw.pk, failed.pk]  # unmeasured last
    assert listed(type="hnsw") == [hnsw.pk]
    assert listed(status="failed") == [failed.pk]
    assert listed(model=str(other_model.pk)) == [hnsw.pk]
    assert listed(q="bge") == [hnsw.pk]
    assert listed(type="annoy", model="abc") == listed()
    page = client.get("/indexes/").content.decode()
    assert 'id="builds"' in page and 'id="deployments"' in page and 'id="build-filters"' in page
    assert f'href="/indexes/{theirs.pk}/"' not in page
