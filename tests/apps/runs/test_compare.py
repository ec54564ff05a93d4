"""The compare side: comparison page, per-query drill-down, leaderboard, exports and the API,
on evaluations written by hand (per-query values and run files), so every number is known."""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from apps.accounts.services import api_token_create
from apps.registry.models import EmbeddingModel
from apps.runs.models import Evaluation, QueryResult
from tests.conftest import write_beir
from workers.ml.metrics import METRICS, write_trec_run

pytestmark = pytest.mark.django_db

N = 12  # judged test queries: exact randomization tests (2**12 flips ≤ 10,000)
QIDS = [f"q{i:02d}" for i in range(1, N + 1)]
A_NDCG = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
# B is better on every query (significant); C is better on some, worse on others (not).
B_NDCG = [a + d for a, d in zip(A_NDCG, [0.3, 0.25, 0.35, 0.3, 0.2, 0.4] * 2, strict=True)]
C_NDCG = [a + d for a, d in zip(A_NDCG, [0.1, -0.1, 0.05, -0.05, 0.1, 0.0] * 2, strict=True)]


def exact_p(d) -> float:
    observed = abs(sum(d))
    flips = list(itertools.product((1, -1), repeat=len(d)))
    hits = sum(abs(sum(s * x for s, x in zip(f, d, strict=True))) >= observed - 1e-9 for f in flips)
    return hits / len(flips)


@pytest.fixture
def version(team, tmp_path):
    from apps.datasets.services import dataset_import_beir

    corpus = [
        {"_id": f"d{i}", "title": f"Doc {i}", "text": f"text of document {i}"} for i in range(1, 31)
    ]
    queries = [{"_id": q, "text": f"question number {q}"} for q in QIDS]
    qrels = {
        "test": [(q, f"d{i}", 2) for i, q in enumerate(QIDS, 1)]
        + [(q, f"d{i + 12}", 1) for i, q in enumerate(QIDS, 1)]
        + [("q01", "d30", 0)],
        "train": [("q01", "d25", 1), ("q02", "d26", 1)],
    }
    folder = write_beir(tmp_path / "twelve", corpus=corpus, queries=queries, qrels=qrels)
    return dataset_import_beir(team=team, name="twelve", path=folder).version


def _model(team, name):
    return EmbeddingModel.objects.create(
        team=team,
        name=name,
        source="path",
        source_ref="/nowhere",
        path="/nowhere",
        layout="sentence-transformers",
        dimension=8,
        max_seq_length=128,
    )


def make_evaluation(
    team, version, ndcg, *, model=None, split="test", runs=None, status="succeeded"
):
    now = timezone.now()
    e = Evaluation.objects.create(
        team=team,
        method="dense" if model else "bm25",
        model=model,
        dataset_version=version,
        split=split,
        max_seq_length=128,
        status=status,
        started_at=now - timedelta(seconds=12),
        finished_at=now,
    )
    queries = {
        q.query_id: q
        for q in version.queries.filter(qrels__split=split).distinct().order_by("query_id")
    }
    per_query = {}
    for qid, value in zip(sorted(queries), ndcg, strict=False):
        # Every metric gets a value; mrr@10 differs from ndcg@10 so a metric switch shows.
        values = dict.fromkeys(METRICS, value)
        values["mrr@10"] = round(1 - value, 6)
        per_query[qid] = values
    QueryResult.objects.bulk_create(
        QueryResult(evaluation=e, query=queries[qid], metrics=v) for qid, v in per_query.items()
    )
    e.metrics = {m: float(np.mean([v[m] for v in per_query.values()])) for m in METRICS}
    folder = Path(settings.ARTIFACTS_ROOT) / "evaluations" / str(e.pk)
    folder.mkdir(parents=True, exist_ok=True)
    run = {
        qid: {doc: 1.0 - 0.05 * rank for rank, doc in enumerate(docs)}
        for qid, docs in (runs or {}).items()
    }
    write_trec_run(run=run, path=folder / "run.trec", tag=f"e{e.pk}")
    e.run_file = str(folder / "run.trec")
    e.query_count = len(per_query)
    e.save()
    return e


# A misses d1 (grade 2) on q01; B finds it first. d30 is judged 0; d29 is not judged.
RUN_A = {"q01": ["d13", "d30", "d29"] + [f"d{i}" for i in range(2, 9)] + ["d1"], "q02": ["d2"]}
RUN_B = {"q01": ["d1", "d13", "d29"] + [f"d{i}" for i in range(2, 9)], "q02": ["d14", "d2"]}


@pytest.fixture
def trio(team, version):
    a = make_evaluation(team, version, A_NDCG, runs=RUN_A)
    b = make_evaluation(team, version, B_NDCG, model=_model(team, "alpha"), runs=RUN_B)
    c = make_evaluation(team, version, C_NDCG, model=_model(team, "beta"))
    return a, b, c


def compare_url(*pks, baseline=None):
    query = "&".join(f"e={pk}" for pk in pks)
    return reverse("runs:compare") + f"?{query}" + (f"&baseline={baseline}" if baseline else "")


def test_compare_page_every_metric_best_deltas_and_significance_in_words(client, owner, trio):
    a, b, c = trio
    client.force_login(owner)
    response = client.get(compare_url(a.pk, b.pk, c.pk, baseline=a.pk))
    assert response.status_code == 200
    body = response.content.decode()
    for name in METRICS:
        assert f'<tr data-metric="{name}">' in body
    # B is best on nDCG@10 and highlighted; A and C are not.
    row = body.split('<tr data-metric="ndcg@10">')[1].split("</tr>")[0]
    assert re.search(rf'class="num best" data-evaluation="{b.pk}"', row)
    assert not re.search(rf'class="num best" data-evaluation="{a.pk}"', row)
    assert f"{np.mean(B_NDCG):.4f}" in row
    delta_b = np.mean(B_NDCG) - np.mean(A_NDCG)
    delta_c = np.mean(C_NDCG) - np.mean(A_NDCG)
    assert f"{delta_b:+.4f}" in row and f"{delta_c:+.4f}" in row
    # Holm over the two runs: B's exact p (2/4096) doubles, C's stays (it is the larger).
    p_b = exact_p([y - x for x, y in zip(A_NDCG, B_NDCG, strict=True)])
    p_c = exact_p([y - x for x, y in zip(A_NDCG, C_NDCG, strict=True)])
    assert p_b == 2 / 4096 and p_c > 0.05
    assert "significant (p &lt; 0.001 after Holm)" in body
    assert f"not significant (p = {max(p_c, 2 * p_b):.2f} after Holm)" in body
    assert 'id="n-queries">12<' in body
    sig = body.split('id="significance"')[1]
    c_row = sig.split(f'data-metric="ndcg@10" data-evaluation="{c.pk}"')[1].split("</tr>")[0]
    assert f"{p_c:.4f}" in c_row  # the raw randomization p-value, exact


def test_baseline_can_be_any_compared_run(client, owner, trio):
    a, b, c = trio
    client.force_login(owner)
    body = client.get(compare_url(a.pk, b.pk, baseline=b.pk)).content.decode()
    assert f'id="baseline">#{b.pk} ' in body
    assert f"{np.mean(A_NDCG) - np.mean(B_NDCG):+.4f}" in body
    assert f"?a={b.pk}&amp;b={a.pk}" in body  # the drill-down link starts from the baseline


def test_missing_query_result_counts_as_zero(client, owner, trio):
    a, b, _ = trio
    QueryResult.objects.filter(evaluation=b, query__query_id="q01").delete()
    client.force_login(owner)
    body = client.get(compare_url(a.pk, b.pk)).content.decode()
    expected = (sum(B_NDCG) - B_NDCG[0]) / N
    assert 'id="n-queries">12<' in body
    assert f"{expected:.4f}" in body


@pytest.mark.parametrize(
    "case, message",
    [
        ("split", "same dataset version and split"),
        ("version", "same dataset version and split"),
        ("pending", "Only succeeded evaluations"),
        ("single", "two or more"),
        ("garbage", "is not an evaluation number"),
        ("baseline", "is not one of the compared"),
    ],
)
def test_comparisons_that_cannot_be_made_are_a_400_with_a_message(
    client, owner, team, trio, version, tiny_version, case, message
):
    a, b, _ = trio
    if case == "split":
        url = compare_url(a.pk, make_evaluation(team, version, [0.5, 0.5], split="train").pk)
    elif case == "version":
        url = compare_url(a.pk, make_evaluation(team, tiny_version, [0.5] * 3).pk)
    elif case == "pending":
        url = compare_url(a.pk, make_evaluation(team, version, A_NDCG, status="pending").pk)
    elif case == "single":
        url = compare_url(a.pk)
    elif case == "garbage":
        url = reverse("runs:compare") + f"?e={a.pk}&e=x"
    else:
        url = compare_url(a.pk, b.pk, baseline=_other(team, version).pk)
    client.force_login(owner)
    response = client.get(url)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert 'id="compare-error"' in response.content.decode()


def _other(team, version):
    return make_evaluation(team, version, A_NDCG)


def test_another_teams_evaluation_anywhere_is_a_404(client, owner, outsider, other_team, trio):
    a, b, _ = trio
    from apps.datasets.services import dataset_import_beir

    foreign_version = dataset_import_beir(
        team=other_team, name="theirs", path=write_beir(Path(settings.ARTIFACTS_ROOT) / "theirs")
    ).version
    foreign = make_evaluation(other_team, foreign_version, [0.9, 0.9, 0.9])
    client.force_login(owner)
    for url in (
        compare_url(a.pk, foreign.pk),
        compare_url(foreign.pk, a.pk),
        compare_url(a.pk, b.pk, baseline=foreign.pk),
        reverse("runs:compare_csv") + f"?e={a.pk}&e={foreign.pk}",
        reverse("runs:compare_queries") + f"?a={a.pk}&b={foreign.pk}",
        reverse("runs:compare_queries") + f"?a={foreign.pk}&b={a.pk}",
        reverse("runs:leaderboard", args=[foreign_version.pk]),
        reverse("runs:leaderboard_csv", args=[foreign_version.pk]),
        reverse("runs:evaluation_mteb", args=[foreign.pk]),
    ):
        response = client.get(url)
        assert response.status_code == 404, url
        assert b"0.9000" not in response.content
    # And the other way round: the outsider cannot read ours.
    client.force_login(outsider)
    assert client.get(compare_url(a.pk, b.pk)).status_code == 404


def test_drill_down_sorted_by_delta_with_scatter(client, owner, trio):
    a, b, _ = trio
    client.force_login(owner)
    url = reverse("runs:compare_queries") + f"?a={a.pk}&b={b.pk}"
    body = client.get(url).content.decode()
    order = re.findall(r'<tr data-query="(q\d+)"', body)
    deltas = {q: y - x for q, x, y in zip(QIDS, A_NDCG, B_NDCG, strict=True)}
    assert order == sorted(QIDS, key=lambda q: (round(deltas[q], 9), q))
    assert 'id="diagonal"' in body
    assert body.count("<circle ") >= 6  # queries on the same spot share one dot
    assert "12" in body and "Click a query" in body
    desc = client.get(url + "&order=desc").content.decode()
    assert re.findall(r'<tr data-query="(q\d+)"', desc)[0] in ("q06", "q12")


def test_drill_down_metric_is_selectable(client, owner, trio):
    a, b, _ = trio
    client.force_login(owner)
    url = reverse("runs:compare_queries") + f"?a={a.pk}&b={b.pk}&metric=mrr@10"
    body = client.get(url).content.decode()
    assert '<option value="mrr@10" selected>' in body
    # mrr@10 = 1 − ndcg@10 here, so the order flips: B's biggest nDCG gain is its worst loss.
    assert re.findall(r'<tr data-query="(q\d+)"', body)[0] in ("q06", "q12")
    bad = client.get(reverse("runs:compare_queries") + f"?a={a.pk}&b={b.pk}&metric=nope")
    assert bad.status_code == 400


def test_query_click_shows_both_top10_with_grades_and_missed(client, owner, trio):
    a, b, _ = trio
    q01 = a.dataset_version.queries.get(query_id="q01")
    client.force_login(owner)
    url = reverse("runs:compare_queries") + f"?a={a.pk}&b={b.pk}&q={q01.pk}"
    body = client.get(url).content.decode()
    side_a = body.split('id="side-a"')[1].split('id="side-b"')[0]
    side_b = body.split('id="side-b"')[1]
    hits_a = re.findall(r'<li class="([\w-]+)" data-doc="(d\d+)"', side_a.split("<h4>")[0])
    hits_b = re.findall(r'<li class="([\w-]+)" data-doc="(d\d+)"', side_b.split("<h4>")[0])
    assert [d for _, d in hits_a] == RUN_A["q01"][:10] and len(hits_a) == 10
    assert [d for _, d in hits_b] == RUN_B["q01"][:10]
    assert dict((d, c) for c, d in hits_a)["d13"] == "relevant"  # grade 1
    assert dict((d, c) for c, d in hits_a)["d30"] == "judged-0"  # judged not relevant
    assert dict((d, c) for c, d in hits_a)["d29"] == "unjudged"
    assert '<span class="grade" title="relevance grade in test">2</span>' in side_b
    # A put d1 (grade 2) at rank 11: missed from its top-10. B missed nothing relevant.
    missed_a = side_a.split('class="missed"')[1]
    assert 'data-doc="d1"' in missed_a and "(1)" in side_a
    assert "None missed." in side_b
    # From htmx, only the panel comes back.
    fragment = client.get(url, HTTP_HX_REQUEST="true", HTTP_HX_TARGET="query-panel")
    text = fragment.content.decode()
    assert "<html" not in text and 'id="side-b"' in text and 'id="query-deltas"' not in text
    assert "HX-Request" in fragment["Vary"]


def test_query_of_another_version_is_a_404(client, owner, trio, tiny_version):
    a, b, _ = trio
    other_query = tiny_version.queries.first()
    client.force_login(owner)
    url = reverse("runs:compare_queries") + f"?a={a.pk}&b={b.pk}&q={other_query.pk}"
    assert client.get(url).status_code == 404


def test_leaderboard_sorts_and_filters(client, owner, team, trio, version):
    a, b, c = trio
    train = make_evaluation(team, version, [0.95, 0.95], split="train")
    make_evaluation(team, version, A_NDCG, status="failed")
    client.force_login(owner)
    url = reverse("runs:leaderboard", args=[version.pk])

    def rows(query=""):
        body = client.get(url + query).content.decode()
        return [int(x) for x in re.findall(r'<tr data-evaluation="(\d+)"', body)], body

    order, body = rows()
    assert order == [train.pk, b.pk, c.pk, a.pk]  # nDCG@10, best first, all splits
    assert "1 other" in body
    assert re.search(
        rf'data-evaluation="{b.pk}">.*?class="num best" data-metric="ndcg@10"', body, re.S
    )
    assert rows("?sort=ndcg@10&dir=asc")[0] == [a.pk, c.pk, b.pk, train.pk]
    assert rows("?sort=mrr@10")[0][:3] == [a.pk, c.pk, b.pk]  # mrr = 1 − ndcg here
    assert rows("?split=test")[0] == [b.pk, c.pk, a.pk]
    assert rows("?split=train")[0] == [train.pk]
    assert rows(f"?model={b.model_id}")[0] == [b.pk]
    assert rows("?method=bm25")[0] == [train.pk, a.pk]
    assert rows("?sort=bogus&method=nonsense")[0] == [train.pk, b.pk, c.pk, a.pk]
    # Compare from here: checkboxes in a GET form to the compare page.
    assert 'action="/runs/compare/"' in body and f'name="e" value="{a.pk}"' in body


def test_leaderboard_and_compare_links_from_version_list_and_evaluation(
    client, owner, trio, version
):
    a, *_ = trio
    client.force_login(owner)
    lb = reverse("runs:leaderboard", args=[version.pk])
    assert (
        f'href="{lb}"'
        in client.get(reverse("datasets:version", args=[version.pk])).content.decode()
    )
    listing = client.get(reverse("runs:evaluations")).content.decode()
    assert (
        'id="compare-form"' in listing and f'name="e" value="{a.pk}" form="compare-form"' in listing
    )
    assert f'href="{lb}"' in listing
    detail = client.get(reverse("runs:evaluation", args=[a.pk])).content.decode()
    assert reverse("runs:evaluation_mteb", args=[a.pk]) in detail and lb in detail


def test_comparison_csv(client, owner, trio):
    a, b, c = trio
    client.force_login(owner)
    response = client.get(reverse("runs:compare_csv") + f"?e={a.pk}&e={b.pk}&e={c.pk}")
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [int(r["evaluation"]) for r in rows] == [a.pk, b.pk, c.pk]
    assert [r["baseline"] for r in rows] == ["1", "0", "0"]
    assert float(rows[1]["ndcg@10"]) == pytest.approx(np.mean(B_NDCG), abs=1e-6)
    assert float(rows[1]["ndcg@10 delta"]) == pytest.approx(
        np.mean(B_NDCG) - np.mean(A_NDCG), abs=1e-6
    )
    assert float(rows[1]["ndcg@10 p randomization"]) == pytest.approx(2 / 4096, abs=1e-6)
    assert rows[1]["ndcg@10 significant"] == "1" and rows[2]["ndcg@10 significant"] == "0"
    assert rows[0]["ndcg@10 delta"] == ""


def test_leaderboard_csv(client, owner, trio, version):
    a, b, c = trio
    client.force_login(owner)
    url = reverse("runs:leaderboard_csv", args=[version.pk]) + "?sort=ndcg@10&dir=asc"
    rows = list(csv.DictReader(io.StringIO(client.get(url).content.decode())))
    assert [int(r["evaluation"]) for r in rows] == [a.pk, c.pk, b.pk]
    assert rows[2]["label"] == "alpha" and rows[0]["label"] == "BM25 (bm25s)"
    assert list(rows[0])[-len(METRICS) :] == list(METRICS)


def test_mteb_json(client, owner, trio):
    _, b, _ = trio
    client.force_login(owner)
    response = client.get(reverse("runs:evaluation_mteb", args=[b.pk]))
    assert response.status_code == 200
    data = json.loads(response.content)
    assert {"task_name", "scores", "evaluation_time", "mteb_version", "dataset_revision"} <= set(
        data
    )
    entry = data["scores"]["test"][0]
    assert entry["main_score"] == entry["ndcg_at_10"] == pytest.approx(np.mean(B_NDCG))
    for key in ("ndcg_at_1", "mrr_at_10", "recall_at_100", "map_at_100", "precision_at_1"):
        assert key in entry
    assert entry["hf_subset"] == "default" and isinstance(entry["languages"], list)
    assert data["evaluation_time"] == pytest.approx(12.0)
    assert data["dataset_revision"] == b.dataset_version.content_hash
    assert data["embedhub"]["model"] == "alpha"


def test_mteb_json_of_an_unfinished_evaluation_is_a_404(client, owner, team, version):
    pending = make_evaluation(team, version, A_NDCG, status="pending")
    client.force_login(owner)
    assert client.get(reverse("runs:evaluation_mteb", args=[pending.pk])).status_code == 404


def test_api_compare(client, team, owner, outsider, other_team, trio, version):
    a, b, c = trio
    url = f"/api/v1/compare?e={a.pk}&e={b.pk}&e={c.pk}&baseline={a.pk}"
    assert client.get(url).status_code == 401
    _, raw = api_token_create(team=team, user=owner, name="ci")
    auth = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
    body = client.get(url, **auth).json()
    assert body["baseline"] == a.pk and body["split"] == "test" and body["queries"] == N
    assert [e["id"] for e in body["evaluations"]] == [a.pk, b.pk, c.pk]
    assert body["evaluations"][1]["metrics"]["ndcg@10"] == pytest.approx(np.mean(B_NDCG))
    delta = next(d for d in body["deltas"] if d["evaluation"] == b.pk and d["metric"] == "ndcg@10")
    assert delta["delta"] == pytest.approx(np.mean(B_NDCG) - np.mean(A_NDCG), abs=1e-6)
    assert delta["p_randomization"] == pytest.approx(2 / 4096, abs=1e-6)
    assert delta["p_randomization_holm"] == pytest.approx(4 / 4096, abs=1e-6)
    assert delta["ci95"][0] <= delta["delta"] <= delta["ci95"][1]
    assert delta["significant"] is True and 0 <= delta["p_t_test"] < 0.001
    assert len(body["deltas"]) == 2 * len(METRICS)

    mismatch = make_evaluation(team, version, [0.5, 0.5], split="train")
    response = client.get(f"/api/v1/compare?e={a.pk}&e={mismatch.pk}", **auth)
    assert response.status_code == 400 and "same dataset version" in response.json()["error"]

    _, foreign = api_token_create(team=other_team, user=outsider, name="theirs")
    assert client.get(url, HTTP_AUTHORIZATION=f"Bearer {foreign}").status_code == 404


def test_the_web_process_loads_scipy_only_when_comparing():
    import subprocess
    import sys

    from tests.conftest import REPO

    code = (
        "import django, sys; django.setup();"
        "from django.urls import get_resolver; get_resolver().url_patterns;"
        "import apps.runs.views, apps.runs.api, apps.runs.compare;"
        "print('scipy' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_drill_down_table_finds_filters_and_pages(client, owner, trio, monkeypatch):
    from apps.runs import views

    a, b, _ = trio
    client.force_login(owner)
    url = reverse("runs:compare_queries") + f"?a={a.pk}&b={b.pk}"
    deltas = {q: y - x for q, x, y in zip(QIDS, A_NDCG, B_NDCG, strict=True)}
    found = client.get(url + "&find=q0").content.decode()
    assert set(re.findall(r'<tr data-query="(q\d+)"', found)) == {q for q in QIDS if "q0" in q}
    better = client.get(url + "&show=better").content.decode()
    assert set(re.findall(r'<tr data-query="(q\d+)"', better)) == {
        q for q, d in deltas.items() if round(d, 9) > 0
    }
    monkeypatch.setattr(views, "QUERY_ROWS", 5)
    first = client.get(url).content.decode()
    assert len(re.findall(r'<tr data-query="', first)) == 5 and "page=2" in first
    assert first.count("<circle ") >= 6  # the chart keeps every query
