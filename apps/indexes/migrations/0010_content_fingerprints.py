"""Model fingerprints become content hashes (workers.common.fingerprint): the folder's path and
the files' times no longer count, so hosts with other mounts agree on a model. Every fingerprint
recorded before (an index's query encoder, in its row and in its folder's encoder.json; a
sparse side's model.json; a deployment's encoder, rerank stage and adapter; the search
manifest) is recomputed from the model folder it names, so the search process keeps serving
what it served. A fingerprint whose folder is gone is left as it was (the guard refuses it, as
it did before)."""

from __future__ import annotations

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


def refingerprint(apps, schema_editor):
    from workers.common.fingerprint import model_fingerprint

    mapping: dict[str, str] = {}  # old fingerprint → content fingerprint (old ones named a path)

    def renew(spec: dict | None) -> bool:
        """Give ``spec`` ({path, fingerprint, …}) its content fingerprint; True if it changed."""
        if not spec or not spec.get("fingerprint") or not spec.get("path"):
            return False
        old = spec["fingerprint"]
        if old not in mapping:
            if not Path(spec["path"]).is_dir():
                return False
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
            deployment.save(update_fields=sorted({f for f in changed}))
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
