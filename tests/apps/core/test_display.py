"""Numbers as pages show them: metric names in the usual spelling, durations in minutes; a
missing page is a styled page with the navigation, not Django's bare one."""

from __future__ import annotations

import pytest

from apps.core.templatetags.display import duration, metric_label


def test_metric_labels():
    assert metric_label("ndcg@10") == "nDCG@10"
    assert metric_label("mrr@10") == "MRR@10"
    assert metric_label("recall@100") == "Recall@100"
    assert metric_label("map") == "MAP"
    assert metric_label("bytes_per_vector") == "bytes_per_vector"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, ""),
        (0.044, "44 ms"),
        (4.44, "4.4 s"),
        (42, "42 s"),
        (584, "9 min 44 s"),
        (700.4, "11 min"),
        (4000, "1 h 06 min"),
    ],
)
def test_durations(seconds, text):
    assert duration(seconds) == text


@pytest.mark.django_db
def test_a_missing_page_is_styled_and_navigable(client, member, settings):
    settings.DEBUG = False
    client.force_login(member)
    r = client.get("/runs/evaluations/999999/")
    body = r.content.decode()
    assert r.status_code == 404 and 'id="not-found"' in body and 'class="brand"' in body


def test_percent_of():
    from apps.core.templatetags.display import percent_of

    assert percent_of(49, 10000) == "0.49 %"
    assert percent_of(1, 1) == "100 %" and percent_of(1, 4) == "25.0 %" and percent_of(1, 0) == "—"


@pytest.mark.django_db
def test_the_training_form_is_grouped_and_hints_where_data_comes_from(client, member):
    client.force_login(member)
    page = client.get("/runs/training/new/").content.decode()
    assert "<legend>What to train</legend>" in page and 'data-when="method=lora"' in page
    assert "<summary>More settings</summary>" in page and 'id="no-training-data"' in page
    assert page.count('name="batch_size"') == 1
