"""The fast ingest paths: ids as 64-bit hashes in the scan, a load pass that does not validate
again but re-hashes the files, word counts and duplicate hints computed as rows stream by,
and the health report's duplicate search by hash. Each must give what the exact paths give."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from apps.datasets import beir
from apps.datasets.beir import BeirError, LoadStats, iter_documents, scan_beir_folder, word_count
from apps.datasets.models import Dataset, DatasetVersion, Document, Qrel, Query
from apps.datasets.services import dataset_import_beir
from tests.conftest import TINY_CORPUS, TINY_QUERIES, write_beir


def problems_of(folder) -> list[str]:
    with pytest.raises(BeirError) as info:
        scan_beir_folder(folder)
    return [str(p) for p in info.value.problems]


def _messy_folder(tmp_path):
    corpus = [
        *TINY_CORPUS,
        {"_id": "d1", "text": "again"},  # line 9: duplicate
        {"_id": "d2"},  # line 10: duplicate (reported as such, not as missing text)
        {"_id": "d20", "text": 5},  # line 11: bad text, d20 is then unknown to the judgements
        {"_id": "d20", "text": "fine"},  # line 12: duplicate of a rejected row
        {"_id": 7, "text": "integer id"},
        {"_id": "7", "text": "same id as a string"},  # line 14: duplicate
    ]
    queries = [*TINY_QUERIES, {"_id": "q1", "text": "dup"}]
    qrels = {"test": [("q1", "d1", 1), ("q1", "d1", 2), ("q2", "d20", 1), ("q2", "7", 1)]}
    return write_beir(tmp_path / "messy", corpus=corpus, queries=queries, qrels=qrels)


def test_duplicates_are_named_exactly(tmp_path):
    folder = _messy_folder(tmp_path)
    c, q, t = (str(folder / n) for n in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"))
    assert problems_of(folder) == [
        f"{c}:9: duplicate document id 'd1'",
        f"{c}:10: duplicate document id 'd2'",
        f"{c}:11: missing 'text' (a string)",
        f"{c}:12: duplicate document id 'd20'",
        f"{c}:14: duplicate document id '7'",
        f"{q}:6: duplicate query id 'q1'",
        f"{t}:3: duplicate judgement (q1, d1)",
        f"{t}:4: knock-on: document id 'd20' is on corpus line 11, rejected above",
    ]


def _duplicates_folder(tmp_path):
    corpus = [
        *TINY_CORPUS,
        {"_id": "d1", "text": "again"},
        {"_id": "d2"},
        {"_id": 7, "text": "integer id"},
        {"_id": "7", "text": "same id as a string"},
    ]
    queries = [*TINY_QUERIES, {"_id": "q1", "text": "dup"}]
    qrels = {"test": [("q1", "d1", 1), ("q1", "d1", 2), ("q2", "7", 1)]}
    return write_beir(tmp_path / "dups", corpus=corpus, queries=queries, qrels=qrels)


@pytest.mark.parametrize("bits", [0, 1, 3])
def test_colliding_hashes_change_nothing(tmp_path, monkeypatch, bits):
    """With a hash of 0 to 2 bits every file takes the exact re-read; results are the same.

    (A judgement naming an absent id is the limit: with colliding hashes the scan may take it
    for a known one, which the load then refuses; see the next test.)"""
    dups, clean = _duplicates_folder(tmp_path), write_beir(tmp_path / "clean")
    expected_problems = problems_of(dups)
    assert len(expected_problems) == 5
    expected = scan_beir_folder(clean)
    expected_documents = list(iter_documents(expected))

    monkeypatch.setattr(beir, "_hash", lambda key: hash(key) & bits)
    assert problems_of(dups) == expected_problems
    scan = scan_beir_folder(clean)
    counts = (scan.document_count, scan.query_count, scan.qrels_counts)
    assert counts == (8, 5, expected.qrels_counts)
    assert scan.content_hash == expected.content_hash
    assert list(iter_documents(scan)) == expected_documents


@pytest.mark.django_db
def test_an_unknown_id_that_shares_a_known_hash_is_refused_by_the_load(team, tmp_path, monkeypatch):
    folder = write_beir(tmp_path / "b", qrels={"test": [("q1", "d1", 1), ("q1", "nope", 1)]})
    monkeypatch.setattr(beir, "_hash", lambda key: 0)  # every id "found" by the scan
    assert scan_beir_folder(folder).qrels_counts == {"test": 2}
    with pytest.raises(BeirError, match="1 judgement.s. name a query or document id"):
        dataset_import_beir(team=team, name="b", path=folder)
    assert not DatasetVersion.objects.exists() and not Document.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "change",
    [
        lambda text: text.replace("Cats are", "Dogs are"),  # same shape, other bytes
        lambda text: text.replace('"text"', '"txet"', 1),  # a row the load cannot read
        lambda text: text + '{"_id": "d99", "text": "new"}\n',  # a row more
        lambda text: "",  # emptied
    ],
)
def test_a_file_changed_between_the_passes_fails_cleanly(team, tmp_path, monkeypatch, change):
    from apps.datasets import services

    folder = write_beir(tmp_path / "c")
    scan = services.scan_beir_folder

    def scan_then_change(path):
        result = scan(path)
        corpus = folder / "corpus.jsonl"
        corpus.write_text(change(corpus.read_text()))
        return result

    monkeypatch.setattr(services, "scan_beir_folder", scan_then_change)
    with pytest.raises(BeirError) as info:
        dataset_import_beir(team=team, name="c", path=folder)
    (problem,) = info.value.problems
    assert problem.file == str(folder / "corpus.jsonl")
    assert "changed after it was validated" in problem.reason
    assert not Dataset.objects.exists() and not Document.objects.exists()
    assert not Query.objects.exists() and not Qrel.objects.exists()


def test_a_changed_gzip_file_is_noticed(tmp_path):
    import gzip

    folder = write_beir(tmp_path / "g")
    plain = folder / "queries.jsonl"
    (folder / "queries.jsonl.gz").write_bytes(gzip.compress(plain.read_bytes()))
    plain.unlink()
    scan = scan_beir_folder(folder)
    (folder / "queries.jsonl.gz").write_bytes(gzip.compress(b'{"_id": "q1", "text": "x"}\n'))
    with pytest.raises(BeirError, match="changed after it was validated"):
        list(beir.iter_queries(scan))


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "   ",
        "one",
        "two words",
        " lead",
        "trail ",
        " both ",
        "double  space",
        "tab\tsep",
        "new\nline",
        "cr\r\nlf",
        "\x0bvt\x0cff",
        "file\x1cgroup\x1dunit\x1erecord\x1fsep",
        "caf\u00e9 au lait",
        "nbsp\u00a0sep",
        "nel\x85sep",
        "ideographic\u3000space",
        "em\u2003space and\u2028line",
        "zero\u200bwidth",  # not whitespace for str.split
    ],
)
def test_word_count_is_len_of_split(text):
    assert word_count(text) == len(text.split())


def test_load_stats_count_words_and_spot_duplicates(tmp_path):
    corpus = [
        {"_id": "a", "title": "T  two", "text": "one two\tthree"},
        {"_id": "b", "title": "", "text": ""},
        {"_id": "c", "title": "T  two", "text": "one two\tthree"},
    ]
    folder = write_beir(tmp_path / "w", corpus=corpus, qrels={"test": [("q1", "a", 1)]})
    stats = LoadStats()
    rows = list(iter_documents(scan_beir_folder(folder), stats))
    assert [r[0] for r in rows] == ["a", "b", "c"]
    assert stats.word_histogram == Counter({5: 2, 0: 1})
    assert stats.documents_may_repeat()

    unique = LoadStats()
    list(iter_documents(scan_beir_folder(write_beir(tmp_path / "u")), unique))
    assert not unique.documents_may_repeat()


@pytest.mark.django_db
def test_import_stores_the_histogram_and_the_health_report(team, tmp_path):
    corpus = [
        *TINY_CORPUS,
        {"_id": "d9", "title": "Cats", "text": "Cats are small domesticated carnivorous mammals."},
    ]
    version = dataset_import_beir(
        team=team, name="s", path=write_beir(tmp_path / "s", corpus=corpus)
    ).version
    words = Counter(len(d.get("title", "").split()) + len(d["text"].split()) for d in corpus)
    assert version.stats == {"document_words": {str(k): v for k, v in sorted(words.items())}}
    assert version.health["duplicate_documents"] == {"count": 1, "examples": [["d1", "d9"]]}

    clean = dataset_import_beir(team=team, name="clean", path=write_beir(tmp_path / "c")).version
    assert clean.health["duplicate_documents"] == {"count": 0, "examples": []}


@pytest.mark.django_db
def test_duplicate_search_by_hash_matches_the_exact_grouping(team, tmp_path):
    from apps.datasets import health

    texts = {"A": ("t", "alpha"), "B": ("", "beta"), "C": ("x", "gamma"), "D": ("gamma", "x")}
    layout = ["A", "B", "A", "C", "D", "B", "A", "C", "E", "F"] + ["G"] * 7
    corpus = []
    for i, key in enumerate(layout):
        title, text = texts.get(key, ("", key * 3))
        corpus.append({"_id": f"doc{i:02d}", "title": title, "text": text})
    corpus.append({"_id": "Z", "title": "", "text": "GGG"})  # the 6th of its group: no example
    folder = write_beir(tmp_path / "d", corpus=corpus, qrels={"test": [("q1", "doc00", 1)]})
    version = dataset_import_beir(team=team, name="d", path=folder).version
    found = version.health["duplicate_documents"]
    assert found == health._duplicate_documents_orm(version)
    assert found["count"] == 2 + 1 + 1 + 7  # A×3, B×2, C×2 (not D: title and text swapped), G×8
    assert found["examples"][0] == ["doc10", "doc11", "doc12", "doc13", "doc14"]  # file order
    assert found["examples"][1] == ["doc00", "doc02", "doc06"]
    assert sorted(found["examples"][2:]) == [["doc01", "doc05"], ["doc03", "doc07"]]
    assert json.dumps(found)


def test_words_counted_a_block_at_a_time_match_split(tmp_path):
    import random

    rng = random.Random(3)
    alphabet = ["a", "bc", "D", "7", ".", " ", "  ", "   "]
    corpus = []
    for i in range(600):  # more than one 256 KiB block: some long texts
        size = rng.choice([0, 1, 3, 40, 2500])
        text = "".join(rng.choice(alphabet) for _ in range(size))
        title = "".join(rng.choice(alphabet) for _ in range(rng.choice([0, 1, 4])))
        row = {"_id": f"d{i}", "title": title, "text": text}
        if i % 7 == 0:
            row["text"] += rng.choice(["\t tab", " café", "\n", "a\\b"])  # the exact path
        corpus.append(row)
    folder = write_beir(tmp_path / "w", corpus=corpus, qrels={"test": [("q1", "d1", 1)]})
    stats = LoadStats()
    assert len(list(iter_documents(scan_beir_folder(folder), stats))) == 600
    expected = Counter(len(d["title"].split()) + len(d["text"].split()) for d in corpus)
    assert stats.word_histogram == expected
