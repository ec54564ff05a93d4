"""Model fingerprints become content hashes (workers.common.fingerprint): the folder's path and
the files' times no longer count, so hosts with other mounts agree on a model. Every fingerprint
recorded before (an index's query encoder, in its row and in its folder's encoder.json; a
sparse side's model.json; a deployment's encoder, rerank stage and adapter; the search
manifest) is recomputed from the model folder it names, so the search process keeps serving
what it served. Only a fingerprint the folder still matches is renewed (the old one is
recomputed here, path, names, sizes and times as before): a folder changed since the index was
built, or gone, keeps the old value, and the guard refuses it as it did before."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from django.conf import settings
from django.db import migrations


def _rewrite_json(path: Path, change) -> None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return
    if not change(data):
        return
    fd, tmp = tempfile.mkstemp(prefix=".fingerprint-", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(data, out, indent=1, sort_keys=True)
    os.replace(tmp, path)


def old_fingerprint(path: str) -> str:
    """The fingerprint as it was computed before this migration (the folder's resolved path and
    its defining files' names, sizes and whole-second times), frozen here."""
    root = Path(path)
    suffixes = (".safetensors", ".bin", ".pt", ".json", ".txt", ".model")
    if (root / "onnx_config.json").is_file():
        suffixes += (".onnx", ".data")
    items = []
    for file in sorted(root.rglob("*")):
        if file.is_file() and file.suffix in suffixes:
            st = file.stat()
            items.append((str(file.relative_to(root)), st.st_size, int(st.st_mtime)))
    return hashlib.sha256(json.dumps([str(root.resolve()), items]).encode()).hexdigest()


def refingerprint(apps, schema_editor):
    from workers.common.fingerprint import model_fingerprint

    mapping: dict[str, str] = {}  # old fingerprint → content fingerprint (old ones named a path)

    def renew(spec: dict | None) -> bool:
        """Give ``spec`` ({path, fingerprint, …}) its content fingerprint; True if it changed."""
        if not spec or not spec.get("fingerprint") or not spec.get("path"):
            return False
        old = spec["fingerprint"]
        if old not in mapping:
            if not Path(spec["path"]).is_dir() or old_fingerprint(spec["path"]) != old:
                return False  # gone, or changed since: the guard keeps refusing it
            mapping[old] = model_fingerprint(spec["path"])
        spec["fingerprint"] = mapping[old]
        return spec["fingerprint"] != old

    IndexBuild = apps.get_model("indexes", "IndexBuild")
    Deployment = apps.get_model("indexes", "Deployment")
    for build in IndexBuild.objects.exclude(encoder={}).iterator():
        if renew(build.encoder):
            build.save(update_fields=["encoder"])
        if build.path and Path(build.path).is_dir():
            _rewrite_json(Path(build.path) / "encoder.json", renew)
            _rewrite_json(Path(build.path) / "sparse" / "model.json", renew)
    for deployment in Deployment.objects.iterator():
        changed = [
            field
            for field, spec in (
                ("encoder", deployment.encoder),
                ("rerank", deployment.rerank),
                ("adapter", (getattr(deployment, "adapter", None) or {}).get("encoder")),
            )
            if renew(spec)
        ]
        if changed:
            deployment.save(update_fields=sorted(set(changed)))
    ModelUpgrade = apps.get_model("indexes", "ModelUpgrade")
    for upgrade in ModelUpgrade.objects.exclude(adapter_encoder={}).iterator():
        if renew(upgrade.adapter_encoder):
            upgrade.save(update_fields=["adapter_encoder"])
    manifest = Path(settings.SEARCH_MANIFEST)

    def renew_manifest(data: dict) -> bool:
        changed = False
        for entry in (data.get("deployments") or {}).values():
            for spec in (entry.get("encoder"), entry.get("rerank"),
                         (entry.get("adapter") or {}).get("encoder")):  # fmt: skip
                if spec and spec.get("fingerprint") in mapping:
                    spec["fingerprint"] = mapping[spec["fingerprint"]]
                    changed = True
        return changed

    if manifest.is_file():
        _rewrite_json(manifest, renew_manifest)


class Migration(migrations.Migration):
    dependencies = [("indexes", "0009_model_upgrade")]

    operations = [migrations.RunPython(refingerprint, migrations.RunPython.noop)]
