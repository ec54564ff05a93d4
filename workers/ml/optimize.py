"""Optimized (ONNX Runtime) variants of an embedding model, without optimum.

sentence-transformers' own ONNX backend goes through optimum-onnx, which does not import under
transformers 5.x. So the transformer alone is exported with torch.onnx's dynamo exporter (the
legacy TorchScript exporter gives wrong vectors for this attention: cosine 0.95 to torch), int8
comes from onnxruntime.quantization's dynamic quantization (weights int8 per channel, MatMul
only: quantizing every op per tensor costs 10 % of cosine), and the variant folder is a
sentence-transformers folder whose input module runs the ONNX graph while the parent's own
Pooling, Dense and Normalize modules follow it unchanged, so pooling and normalisation are the
parent's by construction. Tokenisation is the parent's tokenizer, saved beside the graph.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sentence_transformers.base.modules.input_module import InputModule

from workers.common.configs.optimize import ONNX_CONFIG

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Texts the variant is checked on against its parent at export: short and long, odd spacing,
# digits and symbols, so that a tokenizer or padding difference shows.
PROBE_TEXTS = [
    "What is the effect of vitamin D on bone density?",
    "  leading and trailing spaces  ",
    "A",
    "Numbers 3.14159, 2,718 and 1e-9; symbols % & @ # — and accents: café, naïve, Zürich.",
    "Long text " + " ".join(f"word{i} sentence part {i % 7}" for i in range(120)),
    "Deep learning improves retrieval of scientific claims with dense embeddings.",
]


def cpu_isa() -> list[str]:
    """The vector instruction sets of this CPU that ONNX Runtime's int8 kernels use (from
    /proc/cpuinfo; empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
            else:
                return []
    except OSError:
        return []
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")
    return [f for f in wanted if f in flags]


class OnnxTransformer(InputModule):
    """The transformer of a sentence-transformers pipeline, run by ONNX Runtime on the CPU.

    It tokenises as the parent's Transformer module does for plain text (padding to the longest,
    ``longest_first`` truncation at ``max_seq_length``) and returns ``token_embeddings`` for the
    parent's Pooling module that follows it."""

    config_keys = ["file", "max_seq_length", "input_names", "dimension", "quantization"]
    config_file_name = ONNX_CONFIG

    def __init__(
        self,
        model_dir: str,
        *,
        file: str,
        max_seq_length: int,
        input_names: Sequence[str],
        dimension: int,
        quantization: str = "none",
        threads: int | None = None,
    ) -> None:
        super().__init__()
        import onnxruntime as ort
        from transformers import AutoTokenizer

        self.model_dir = str(model_dir)
        self.file = file
        self._max_seq_length = int(max_seq_length)
        self.input_names = list(input_names)
        self.dimension = int(dimension)
        self.quantization = quantization
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
        options = ort.SessionOptions()
        # As many threads as torch was given: the search process sets 1 per encoder, a worker
        # its share of the cores (ONNX Runtime's default is every core, whatever else runs).
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(Path(self.model_dir) / file), options, providers=["CPUExecutionProvider"]
        )

    @property
    def max_seq_length(self) -> int:
        return self._max_seq_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        self._max_seq_length = int(value)

    def get_embedding_dimension(self) -> int:
        return self.dimension

    def preprocess(self, inputs: list[str], prompt: str | None = None, **kwargs) -> dict:
        if prompt:
            inputs = self._prepend_prompt(inputs, prompt)
        features = self.tokenizer(
            list(inputs), padding=True, truncation="longest_first",
            max_length=self._max_seq_length, return_tensors="pt",
        )  # fmt: skip
        return {k: v for k, v in features.items() if k in self.input_names}

    def forward(self, features: dict[str, torch.Tensor], **kwargs) -> dict[str, torch.Tensor]:
        feeds = {name: features[name].cpu().numpy().astype(np.int64) for name in self.input_names}
        (hidden,) = self.session.run(["token_embeddings"], feeds)
        device = features["attention_mask"].device
        features["token_embeddings"] = torch.from_numpy(hidden).to(device)
        return features

    def save(self, output_path: str, *args, **kwargs) -> None:
        target = Path(output_path)
        if (target / self.file).resolve() != (Path(self.model_dir) / self.file).resolve():
            shutil.copy2(Path(self.model_dir) / self.file, target / self.file)
        self.save_config(output_path)
        self.save_tokenizer(output_path)

    @classmethod
    def load(cls, model_name_or_path: str, **kwargs: Any) -> OnnxTransformer:
        if not (Path(model_name_or_path) / ONNX_CONFIG).is_file():
            raise FileNotFoundError(f"{model_name_or_path}: not an ONNX variant folder")
        config = json.loads((Path(model_name_or_path) / ONNX_CONFIG).read_text(encoding="utf-8"))
        return cls(model_name_or_path, **{k: config[k] for k in cls.config_keys if k in config})


ONNX_CLASS = f"{OnnxTransformer.__module__}.OnnxTransformer"


def load_onnx_encoder(path: str, *, max_seq_length: int):
    """The variant folder as a SentenceTransformer (CPU: ONNX Runtime's CPU provider).

    sentence-transformers imports a module class outside its own namespace only with
    ``trust_remote_code``; it is given after checking that the folder's modules are this one
    and sentence-transformers' own, so no other code can ride along."""
    from sentence_transformers import SentenceTransformer

    modules = json.loads((Path(path) / "modules.json").read_text(encoding="utf-8"))
    types = [m.get("type", "") for m in modules]
    if (
        not types
        or types[0] != ONNX_CLASS
        or not all(t.startswith("sentence_transformers.") for t in types[1:])
    ):
        raise ValueError(f"{path}: not an ONNX variant folder (modules {types})")
    encoder = SentenceTransformer(path, device="cpu", local_files_only=True, trust_remote_code=True)
    encoder.max_seq_length = max_seq_length
    return encoder


class _Hidden(torch.nn.Module):
    """The transformer's last hidden state for named inputs (what the exporter traces)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra)[0]


def export_onnx(*, encoder, out_file: Path) -> list[str]:
    """Export ``encoder``'s transformer (a loaded fp32 SentenceTransformer whose first module is
    a Transformer) to ``out_file``; returns the graph's input names."""
    from sentence_transformers.sentence_transformer.modules import Transformer

    first = encoder[0]
    if not isinstance(first, Transformer):
        raise ValueError(
            f"only a transformer model can be exported to ONNX (this one starts with "
            f"{type(first).__name__})"
        )
    features = first.preprocess(PROBE_TEXTS[:2])
    names = [n for n in INPUTS if n in features]
    if names[:2] != ["input_ids", "attention_mask"]:
        raise ValueError(f"unexpected model inputs {sorted(features)}: need input_ids and a mask")
    for name in ("onnx_ir", "onnxscript", "torch.onnx"):
        # Their INFO lines (one per deduplicated initializer) would flood a worker's log.
        logging.getLogger(name).setLevel(logging.WARNING)
    model = _Hidden(first.auto_model.float().eval())
    batch, seq = torch.export.Dim("batch", min=1), torch.export.Dim("sequence", min=1)
    shapes = {n: {0: batch, 1: seq} for n in names}
    with torch.no_grad():
        program = torch.onnx.export(
            model,
            args=(),
            kwargs={n: features[n] for n in names},
            input_names=names,
            output_names=["token_embeddings"],
            dynamic_shapes=shapes,
            dynamo=True,
            verbose=False,
        )
    program.save(str(out_file))
    return names


def quantize_int8(*, source: Path, target: Path) -> dict:
    """Dynamic int8: MatMul weights per output channel, activations quantised at run time.
    Returns the quantisation config recorded with the variant."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    config = {"method": "dynamic", "weight_type": "QInt8", "per_channel": True,
              "op_types": ["MatMul"], "tool": "onnxruntime.quantization"}  # fmt: skip
    quantize_dynamic(
        str(source), str(target), per_channel=True, weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul"],
    )  # fmt: skip
    return config


def vectors_agreement(a: np.ndarray, b: np.ndarray) -> dict:
    """Cosine of each pair of rows (the variant's vector against the parent's)."""
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    cos = (a * b).sum(axis=1)
    return {"cosine_min": float(cos.min()), "cosine_mean": float(cos.mean())}


def optimize_model(
    *,
    encoder,
    out_dir: Path,
    quantize: str,
    max_seq_length: int,
    probe_texts: list[str] | None = None,
) -> dict:
    """Write the ONNX variant of ``encoder`` (its parent, loaded in fp32 on the CPU) to
    ``out_dir`` and check it against the parent on ``probe_texts``.

    Returns {file, quantization, quantization_config, input_names, isa, bytes, seconds,
    cosine_min, cosine_mean, probe_texts}; the caller decides what cosine is good enough."""
    from sentence_transformers import SentenceTransformer

    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    fp32 = out_dir / "model.onnx"
    names = export_onnx(encoder=encoder, out_file=fp32)
    file, qconfig = "model.onnx", None
    if quantize == "int8":
        file = "model_int8.onnx"
        qconfig = quantize_int8(source=fp32, target=out_dir / file)
        fp32.unlink()
    elif quantize != "none":
        raise ValueError(f"quantize: {quantize!r} is not one of none, int8")
    dimension = int(encoder[0].get_embedding_dimension())
    encoder.tokenizer.save_pretrained(str(out_dir))  # the head loads the parent's tokenizer
    head = OnnxTransformer(str(out_dir), file=file, max_seq_length=max_seq_length,
                           input_names=names, dimension=dimension,
                           quantization=quantize)  # fmt: skip
    variant = SentenceTransformer(modules=[head, *list(encoder)[1:]], device="cpu")
    variant.max_seq_length = max_seq_length
    variant.save(str(out_dir))
    # What is checked is what was saved: the folder loaded back as every encode path loads it.
    loaded = load_onnx_encoder(str(out_dir), max_seq_length=max_seq_length)
    texts = probe_texts or PROBE_TEXTS
    kwargs = {"batch_size": 16, "convert_to_numpy": True, "show_progress_bar": False}
    agreement = vectors_agreement(encoder.encode(texts, **kwargs), loaded.encode(texts, **kwargs))
    return {
        "file": file,
        "quantization": quantize,
        "quantization_config": qconfig,
        "input_names": names,
        "isa": cpu_isa(),
        "bytes": os.path.getsize(out_dir / file),
        "seconds": round(time.perf_counter() - started, 3),
        "probe_texts": len(texts),
        **{k: (round(v, 6) if math.isfinite(v) else v) for k, v in agreement.items()},
    }
