"""Model fingerprints are content hashes: the same files anywhere are the same model, a changed
byte is another, and times alone change nothing."""

from __future__ import annotations

import os
import shutil

from workers.common.fingerprint import model_fingerprint


def test_a_copy_elsewhere_is_the_same_model_and_a_changed_byte_is_another(
    tiny_model_path, tmp_path
):
    here = model_fingerprint(str(tiny_model_path))
    copy = tmp_path / "another" / "mount"
    shutil.copytree(tiny_model_path, copy)
    assert model_fingerprint(str(copy)) == here  # the path plays no part
    for file in copy.rglob("*"):
        os.utime(file, (1, 1))  # times alone: the same content, the same model
    assert model_fingerprint(str(copy)) == here
    weights = next(copy.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-1] + b"\1")
    assert model_fingerprint(str(copy)) != here  # remembered digests are not reused
    (copy / "notes.md").write_text("not part of the model")
    changed = model_fingerprint(str(copy))
    (copy / "tokenizer_extra.json").write_text("{}")
    assert model_fingerprint(str(copy)) != changed  # a defining file added


def test_the_migration_gives_recorded_fingerprints_their_content_hash(
    db, team, tiny_registered_model, tiny_version, settings, tmp_path
):
    """Rows, index folders and the manifest written with the old path-and-time fingerprint are
    brought to the content hash, so the search process keeps serving them."""
    import importlib
    import json
    from pathlib import Path

    from django.apps import apps

    from apps.indexes.models import Deployment
    from tests.apps.indexes.conftest import build_sync

    migration = importlib.import_module("apps.indexes.migrations.0010_content_fingerprints")
    build = build_sync(team=team, model=tiny_registered_model, version=tiny_version)
    content = build.encoder["fingerprint"]
    assert content == model_fingerprint(tiny_registered_model.path)
    old = migration.old_fingerprint(tiny_registered_model.path)  # what was recorded before
    build.encoder = {**build.encoder, "fingerprint": old}
    build.save(update_fields=["encoder"])
    encoder_json = Path(build.path) / "encoder.json"
    recorded = json.loads(encoder_json.read_text())
    encoder_json.write_text(json.dumps({**recorded, "fingerprint": old}))
    deployment = Deployment.objects.create(team=team, name="d", index=build, encoder=build.encoder)
    gone = {"path": str(tmp_path / "gone"), "fingerprint": "1" * 64, "k_prime": 5, "model": 1}
    Deployment.objects.filter(pk=deployment.pk).update(rerank=gone)
    manifest = Path(settings.SEARCH_MANIFEST)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps({"deployments": {"1/d": {"encoder": {**build.encoder}}}}))

    migration.refingerprint(apps, None)

    build.refresh_from_db()
    deployment.refresh_from_db()
    assert build.encoder["fingerprint"] == content
    assert json.loads(encoder_json.read_text())["fingerprint"] == content
    assert deployment.encoder["fingerprint"] == content
    assert deployment.rerank["fingerprint"] == "1" * 64  # its folder is gone: left to the guard
    entry = json.loads(manifest.read_text())["deployments"]["1/d"]
    assert entry["encoder"]["fingerprint"] == content


def test_the_migration_leaves_a_folder_changed_since_to_the_guard(
    db, team, tiny_registered_model, tiny_version, tmp_path
):
    """A model folder rewritten after its index was built must not get the new weights' hash:
    the search process has to keep refusing that index."""
    import importlib
    import shutil

    from django.apps import apps

    from tests.apps.indexes.conftest import build_sync

    migration = importlib.import_module("apps.indexes.migrations.0010_content_fingerprints")
    copy = tmp_path / "model"
    shutil.copytree(tiny_registered_model.path, copy)
    tiny_registered_model.path = str(copy)
    tiny_registered_model.save(update_fields=["path"])
    build = build_sync(team=team, model=tiny_registered_model, version=tiny_version)
    recorded = migration.old_fingerprint(str(copy))
    build.encoder = {**build.encoder, "fingerprint": recorded}
    build.save(update_fields=["encoder"])
    weights = next(copy.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-1] + b"\2")  # rewritten after the build
    os.utime(weights, (10, 10))
    migration.refingerprint(apps, None)
    build.refresh_from_db()
    assert build.encoder["fingerprint"] == recorded != model_fingerprint(str(copy))
