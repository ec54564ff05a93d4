"""A member merges two fine-tunes in the Merge lab, in Chromium: from the models list to the
lab's form (two models of one architecture ticked, linear with weights), the job page while it
waits, then (the job run here, as a worker would) the registered merged model, whose page
names both parents, their weights and the method; and the lab's list of merges opens a job
page in place (htmx) without blanking it."""

import re

import pytest

from apps.registry.models import MergeJob
from tests.apps.registry import test_merge as merge_tests

pytestmark = pytest.mark.browser

# Two "fine-tunes" of the tiny model (its weights moved by seeded noise), registered as
# tuned-1 and tuned-2: the Merge lab's own fixtures.
tuned_paths = merge_tests.tuned_paths
tuned = merge_tests.tuned


def test_merge_two_fine_tunes_in_the_browser(page, shot, live_server, member, tuned, monkeypatch):
    from workers.tasks.merge import merge

    monkeypatch.setattr(merge, "apply_async", lambda *a, **k: None)
    a, b = tuned
    base = live_server.url
    page.goto(base + "/accounts/login/")
    page.fill("#id_username", "member")
    page.fill("#id_password", "pw-member")
    page.click("button[type=submit]")
    page.wait_for_selector("nav")

    # The models list leads to the lab (in place, htmx), with the form.
    page.goto(base + "/models/")
    page.click("#merge-lab")
    page.wait_for_url(re.compile(r"/models/merge/$"))
    page.wait_for_selector("#merge-form")
    assert "No merge yet." in page.inner_text("main")
    assert page.inner_text("nav.crumbs") == "Home › Models › Merge lab"
    page.check(f"#field-models input[value='{a.pk}']")
    page.check(f"#field-models input[value='{b.pk}']")
    page.select_option("#id_method", "linear")
    page.fill("#id_weights", "3, 1")
    shot(page, "merge-form")
    page.click("#merge-start")

    # The job page while no worker has taken it.
    page.wait_for_url(re.compile(r"/models/merges/\d+/$"))
    job = MergeJob.objects.get()
    assert page.url.endswith(f"/models/merges/{job.pk}/")
    assert (job.method, job.model_ids) == ("linear", [a.pk, b.pk])
    assert "Pending" in page.inner_text("#merge-status")
    assert page.inner_text("nav.crumbs") == f"Home › Models › Merge lab › Merge #{job.pk}"
    parents = page.inner_text("#merge-parents")
    assert "tuned-1" in parents and "tuned-2" in parents
    shot(page, "merge-pending")

    # Run as a worker would; the page then names the registered merge.
    merge.run(job.pk)
    job.refresh_from_db()
    assert job.status == "succeeded", (job.human_error, job.error)
    merged = job.result_model
    page.reload()
    page.wait_for_selector("#merge-result")
    result = page.inner_text("#merge-result")
    assert f"Registered {merged.name}: linear of tuned-1 (0.750), tuned-2 (0.250)." == result
    shot(page, "merge-done")

    # The merged model's page: its lineage names both parents, their weights and the method.
    page.click("#merge-result a")
    page.wait_for_url(re.compile(rf"/models/{merged.pk}/$"))
    lineage = page.inner_text("#merged-by")
    assert f"merge #{job.pk}: linear of" in lineage
    assert "tuned-1 (weight 0.750)" in lineage and "tuned-2 (weight 0.250)" in lineage
    shot(page, "merge-model")

    # Back in the lab, the list of merges opens the job page in place, not a blank one.
    page.click("#merge-link")  # the model page's "Merge" (htmx) with this model ticked
    page.wait_for_url(re.compile(rf"/models/merge/\?models={merged.pk}$"))
    page.wait_for_selector("#merges")
    assert page.is_checked(f"#field-models input[value='{merged.pk}']")
    row = page.locator("#merges tbody tr").first
    assert merged.name in row.inner_text() and "Succeeded" in row.inner_text()
    shot(page, "merge-lab-list")
    page.evaluate("window.__same_page = true")
    link = page.locator(f"#merges a[href='/models/merges/{job.pk}/']")
    assert link.get_attribute("hx-select") == "main"
    link.click()
    page.wait_for_url(re.compile(rf"/models/merges/{job.pk}/$"))
    page.wait_for_selector("#merge-result")
    assert page.evaluate("window.__same_page") is True  # swapped in place, no reload
    main = page.inner_text("main")
    assert f"Merge #{job.pk}" in main and "tuned-1" in main and merged.name in main
    assert page.title().startswith(f"Merge #{job.pk}")
    shot(page, "merge-job-in-place")
