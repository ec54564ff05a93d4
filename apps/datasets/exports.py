"""Versions back out: a BEIR zip for collections, JSONL for training sets (streamed)."""

from __future__ import annotations

import csv
import io
import json
import tempfile
import zipfile
from collections.abc import Iterator

from apps.datasets.models import DatasetVersion


def beir_zip(version: DatasetVersion) -> tempfile.SpooledTemporaryFile:
    """A zip of corpus.jsonl, queries.jsonl and qrels/<split>.tsv, spooled to disk when large."""
    out = tempfile.SpooledTemporaryFile(max_size=64 * 1024 * 1024)
    prefix = f"{version.dataset.name}-v{version.number}/"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open(prefix + "corpus.jsonl", "w") as fh:
            rows = version.documents.order_by("pk").values_list(
                "doc_id", "title", "text", "metadata"
            )
            for doc_id, title, text, meta in rows.iterator(chunk_size=5000):
                record = {"_id": doc_id, "title": title, "text": text, "metadata": meta}
                fh.write((json.dumps(record) + "\n").encode())
        with zf.open(prefix + "queries.jsonl", "w") as fh:
            rows = version.queries.order_by("pk").values_list("query_id", "text", "metadata")
            for query_id, text, meta in rows.iterator(chunk_size=5000):
                fh.write(
                    (json.dumps({"_id": query_id, "text": text, "metadata": meta}) + "\n").encode()
                )
        for split in version.splits:
            with zf.open(f"{prefix}qrels/{split}.tsv", "w") as fh:
                buf = io.StringIO()
                writer = csv.writer(buf, delimiter="\t", lineterminator="\n")
                writer.writerow(["query-id", "corpus-id", "score"])
                rows = (
                    version.qrels.filter(split=split)
                    .order_by("pk")
                    .values_list("query__query_id", "document__doc_id", "score")
                )
                for row in rows.iterator(chunk_size=5000):
                    writer.writerow(row)
                fh.write(buf.getvalue().encode())
    out.seek(0)
    return out


def training_jsonl(version: DatasetVersion) -> Iterator[bytes]:
    rows = version.training_rows.order_by("row", "pk").values_list(
        "anchor", "positive", "negatives", "score"
    )
    for anchor, positive, negatives, score in rows.iterator(chunk_size=5000):
        record: dict = {"anchor": anchor, "positive": positive}
        for i, negative in enumerate(negatives, start=1):
            record[f"negative_{i}"] = negative
        if score is not None:
            record["score"] = score
        yield (json.dumps(record) + "\n").encode()
