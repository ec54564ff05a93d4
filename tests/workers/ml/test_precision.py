"""Precision as an encoder setting: how fp32, bf16 and auto resolve, and what bf16 autocast
gives back (float32 vectors close to fp32's, in the same order)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.support.tiny_model import DEFAULT_SENTENCES, build_tiny_model
from workers.ml import precision as p
from workers.ml.encode import encode_texts, load_encoder


@pytest.fixture
def cpu_with(monkeypatch):
    def set_flags(*flags: str) -> None:
        monkeypatch.setattr(p, "cpu_flags", lambda: frozenset(flags))

    return set_flags


def test_fp32_and_bf16_are_what_was_asked(cpu_with):
    cpu_with("avx2")  # no native bf16: an explicit bf16 still runs (emulated), auto does not
    assert p.resolve_precision("fp32", device="cpu", quality_proven=True) == "fp32"
    assert p.resolve_precision("bf16", device="cpu", quality_proven=False) == "bf16"


@pytest.mark.parametrize(
    ("flags", "proven", "expected"),
    [
        (("avx512_bf16",), True, "bf16"),
        (("amx_bf16", "amx_tile"), True, "bf16"),
        (("avx512_bf16",), False, "fp32"),  # quality not shown: never bf16 by default
        (("avx512f", "avx2"), True, "fp32"),  # bf16 would be emulated: slower than fp32
        ((), True, "fp32"),
    ],
)
def test_auto_needs_native_bf16_and_proven_quality(cpu_with, flags, proven, expected):
    cpu_with(*flags)
    assert p.resolve_precision("auto", device="cpu", quality_proven=proven) == expected


def test_an_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision: 'fp16' is not one of fp32, bf16, auto"):
        p.resolve_precision("fp16", device="cpu", quality_proven=True)


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx512_bf16 amx_tile\n\n")
    assert p.cpu_flags.__wrapped__(str(info)) == {"fpu", "sse", "avx512_bf16", "amx_tile"}
    assert p.cpu_flags.__wrapped__(str(tmp_path / "none")) == frozenset()


def test_bf16_vectors_are_float32_close_to_fp32_and_in_order(tmp_path: Path):
    folder = build_tiny_model(tmp_path / "m")
    encoder = load_encoder(path=str(folder), layout="sentence-transformers", pooling="mean",
                           normalize=True, max_seq_length=64, device="cpu")  # fmt: skip
    texts = DEFAULT_SENTENCES[:12]
    fp32 = encode_texts(encoder=encoder, texts=texts, normalize=True, batch_size=4)
    bf16 = encode_texts(encoder=encoder, texts=texts, normalize=True, batch_size=4,
                        precision="bf16")  # fmt: skip
    assert fp32.dtype == bf16.dtype == np.float32 and fp32.shape == bf16.shape
    cosines = (fp32 * bf16).sum(axis=1)
    assert cosines.min() > 0.99, cosines  # the same texts, row for row
    assert not np.array_equal(fp32, bf16)  # it did run in bf16
    # fp32 through the precision path is exactly the plain encode.
    plain = encoder.encode(texts, batch_size=4, normalize_embeddings=True)
    np.testing.assert_allclose(fp32, plain, rtol=0, atol=1e-6)
