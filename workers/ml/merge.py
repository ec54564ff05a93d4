"""Weight-space merges of models that share one architecture (fine-tunes of the same base,
full or with a merged LoRA): uniform average ("model soup", Wortsman et al. 2022), linear with
weights (LM-Cocktail), SLERP between two models, TIES (Yadav et al. 2023) and DARE (Yu et al.
2024) on the task vectors against the common base, and Model Stock (Jang et al. 2024).

The arithmetic is plain functions over state dicts (``{name: float32 array}``); the folder
functions read sentence-transformers folders into such dicts and write the result as one, the
first parent's non-weight files (tokenizer, configs, modules.json, pooling) copied beside the
merged weights (safetensors). Every merge is per tensor. No Django; torch and safetensors are
imported inside the folder functions only.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

StateDict = dict[str, np.ndarray]

METHODS = ("soup", "greedy_soup", "linear", "slerp", "ties", "dare", "model_stock")
# Methods on task vectors (a fine-tune minus the base): they need the base.
NEEDS_BASE = ("ties", "dare", "model_stock")

# Key separator between a weight file's path inside the folder and the tensor's name in it.
SEP = "::"
# Weight files of other frameworks or exports that a merged folder must not carry: they would
# hold the first parent's weights beside the merged ones.
STALE_DIRS = {"onnx", "openvino", "checkpoints"}
STALE_SUFFIXES = {".onnx", ".h5", ".ot", ".msgpack", ".safetensors", ".pt", ".ckpt"}
TORCH_WEIGHTS = "pytorch_model.bin"


class MergeError(ValueError):
    """Models that cannot be merged, or settings that cannot apply; the message says why."""


# --- checks ----------------------------------------------------------------------------------


def check_compatible(states: Sequence[StateDict], names: Sequence[str] | None = None) -> None:
    """Refuse models that do not share one architecture: the same tensor names and shapes.
    The message names the first tensor that differs and the two models."""
    if not states:
        raise MergeError("no models to merge")
    names = list(names or [f"model {i + 1}" for i in range(len(states))])
    first = states[0]
    for other, name in zip(states[1:], names[1:], strict=True):
        for key in sorted(set(first) | set(other)):
            if key not in other:
                raise MergeError(
                    f"{name} has no tensor {_pretty(key)} that {names[0]} has: not the same "
                    "architecture"
                )
            if key not in first:
                raise MergeError(
                    f"{name} has a tensor {_pretty(key)} that {names[0]} lacks: not the same "
                    "architecture"
                )
            if first[key].shape != other[key].shape:
                raise MergeError(
                    f"tensor {_pretty(key)}: shape {tuple(other[key].shape)} in {name}, "
                    f"{tuple(first[key].shape)} in {names[0]}: not the same architecture"
                )


def _pretty(key: str) -> str:
    file, _, name = key.rpartition(SEP)
    return f"{name} (in {file})" if file and file != "model.safetensors" else name


def normalised_weights(weights: Sequence[float] | None, count: int) -> list[float]:
    """``weights`` scaled to sum to 1 (uniform when None); refuses a wrong count, a negative
    weight or a zero sum."""
    if weights is None:
        return [1.0 / count] * count
    if len(weights) != count:
        raise MergeError(f"weights: {len(weights)} given for {count} models")
    if any(w < 0 for w in weights):
        raise MergeError("weights: every weight must be 0 or more")
    total = float(sum(weights))
    if total <= 0:
        raise MergeError("weights: at least one weight must be above 0")
    return [float(w) / total for w in weights]


# --- averages --------------------------------------------------------------------------------


def linear(states: Sequence[StateDict], weights: Sequence[float] | None = None) -> StateDict:
    """Σ wᵢ θᵢ per tensor, the weights scaled to sum to 1 (uniform: the model soup)."""
    check_compatible(states)
    w = normalised_weights(weights, len(states))
    out: StateDict = {}
    for key in states[0]:
        acc = np.zeros_like(states[0][key], dtype=np.float32)
        for wi, state in zip(w, states, strict=True):
            if wi:
                acc += np.float32(wi) * state[key]
        out[key] = acc
    return out


def soup(states: Sequence[StateDict]) -> StateDict:
    """The uniform average of the models' weights (a "uniform soup")."""
    check_compatible(states)
    out: StateDict = {}
    for key in states[0]:
        acc = np.zeros_like(states[0][key], dtype=np.float32)
        for state in states:
            acc += state[key]
        out[key] = acc / np.float32(len(states))
    return out


def slerp_tensor(a: np.ndarray, b: np.ndarray, t: float, eps: float = 1e-7) -> np.ndarray:
    """Spherical interpolation from ``a`` (t = 0) to ``b`` (t = 1) along the arc between the two
    flattened tensors: sin((1−t)Ω)/sin Ω · a + sin(tΩ)/sin Ω · b, Ω the angle between them.
    Nearly parallel tensors (or a zero one) fall back to the straight line."""
    a64, b64 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    na, nb = np.linalg.norm(a64), np.linalg.norm(b64)
    if na < eps or nb < eps:
        return ((1 - t) * a64 + t * b64).reshape(a.shape).astype(np.float32)
    cos = float(np.clip(a64 @ b64 / (na * nb), -1.0, 1.0))
    if abs(cos) > 1 - eps:
        return ((1 - t) * a64 + t * b64).reshape(a.shape).astype(np.float32)
    omega = math.acos(cos)
    sin = math.sin(omega)
    mixed = (math.sin((1 - t) * omega) / sin) * a64 + (math.sin(t * omega) / sin) * b64
    return mixed.reshape(a.shape).astype(np.float32)


def slerp(a: StateDict, b: StateDict, t: float) -> StateDict:
    """SLERP of two models, tensor by tensor; ``t`` is the share of ``b`` (0: a, 1: b)."""
    if not 0.0 <= t <= 1.0:
        raise MergeError(f"weights: the SLERP position must be within 0 and 1, not {t:g}")
    check_compatible([a, b])
    if t == 0.0:
        return {k: v.copy() for k, v in a.items()}
    if t == 1.0:
        return {k: v.copy() for k, v in b.items()}
    return {key: slerp_tensor(a[key], b[key], t) for key in a}


# --- task vectors ----------------------------------------------------------------------------


def task_vectors(states: Sequence[StateDict], base: StateDict) -> list[StateDict]:
    """τᵢ = θᵢ − θ_base for every model."""
    check_compatible([base, *states])
    return [{k: state[k] - base[k] for k in base} for state in states]


def trim(tau: np.ndarray, density: float) -> np.ndarray:
    """TIES' trim: keep the ``density`` share of entries with the largest magnitude (at least
    one), zero the rest."""
    flat = tau.ravel()
    keep = max(1, int(math.ceil(density * flat.size)))
    if keep >= flat.size:
        return tau.copy()
    threshold_at = flat.size - keep
    order = np.argpartition(np.abs(flat), threshold_at)
    out = np.zeros_like(flat)
    top = order[threshold_at:]
    out[top] = flat[top]
    return out.reshape(tau.shape)


def ties_tensor(
    taus: Sequence[np.ndarray], *, density: float, weights: Sequence[float] | None = None
) -> np.ndarray:
    """TIES-merging of one tensor's task vectors: trim each to its top ``density`` by
    magnitude, elect each entry's sign by the sign of the (weighted) sum of the trimmed
    values, then average only the values that agree with it (the disjoint mean; an entry no
    model keeps stays 0)."""
    w = [1.0] * len(taus) if weights is None else list(weights)
    trimmed = np.stack([trim(t, density) for t in taus]).astype(np.float64)
    wv = np.asarray(w, dtype=np.float64).reshape((-1,) + (1,) * (trimmed.ndim - 1))
    sign = np.sign((wv * trimmed).sum(axis=0))
    agree = (np.sign(trimmed) == sign) & (trimmed != 0)
    weight_sum = (wv * agree).sum(axis=0)
    total = (wv * trimmed * agree).sum(axis=0)
    merged = np.divide(total, weight_sum, out=np.zeros_like(total), where=weight_sum > 0)
    return merged.astype(np.float32)


def ties(
    states: Sequence[StateDict],
    base: StateDict,
    *,
    density: float = 0.2,
    scale: float = 1.0,
    weights: Sequence[float] | None = None,
) -> StateDict:
    """θ_base + λ · TIES(τ₁ … τₖ) per tensor (λ = ``scale``)."""
    if not 0.0 < density <= 1.0:
        raise MergeError(f"density: must be above 0 and at most 1, not {density:g}")
    if weights is not None and len(weights) != len(states):
        raise MergeError(f"weights: {len(weights)} given for {len(states)} models")
    taus = task_vectors(states, base)
    return {
        k: base[k] + np.float32(scale) * ties_tensor([t[k] for t in taus], density=density,
                                                     weights=weights)
        for k in base
    }  # fmt: skip


def dare_tensor(tau: np.ndarray, *, drop_rate: float, rng: np.random.Generator) -> np.ndarray:
    """DARE on one task vector: drop each entry with probability ``drop_rate`` and rescale the
    survivors by 1 / (1 − drop_rate), so that the expected task vector is unchanged."""
    if drop_rate == 0.0:
        return tau.copy()
    keep = rng.random(tau.shape) >= drop_rate
    return np.where(keep, tau / np.float32(1.0 - drop_rate), np.float32(0.0)).astype(np.float32)


def dare(
    states: Sequence[StateDict],
    base: StateDict,
    *,
    drop_rate: float = 0.5,
    seed: int = 0,
    weights: Sequence[float] | None = None,
) -> StateDict:
    """θ_base + Σ wᵢ · DARE(τᵢ) per tensor, the weights scaled to sum to 1 (uniform: the
    average of the sparsified task vectors). One seeded generator draws the masks, tensor by
    tensor in name order and model by model, so the same seed gives the same merge."""
    if not 0.0 <= drop_rate < 1.0:
        raise MergeError(f"drop_rate: must be at least 0 and below 1, not {drop_rate:g}")
    w = normalised_weights(weights, len(states))
    taus = task_vectors(states, base)
    rng = np.random.default_rng(seed)
    out: StateDict = {}
    for k in sorted(base):
        acc = base[k].astype(np.float32).copy()
        for wi, tau in zip(w, taus, strict=True):
            acc += np.float32(wi) * dare_tensor(tau[k], drop_rate=drop_rate, rng=rng)
        out[k] = acc
    return out


def model_stock_ratio(cos: float, k: int) -> float:
    """Model Stock's interpolation ratio t = k·cos θ / (1 + (k − 1)·cos θ) (Jang et al. 2024,
    eq. for k fine-tuned models), cos θ the angle between their task vectors; cut to [0, 1]
    (the derivation assumes fine-tunes that agree more than they disagree)."""
    if k < 2:
        raise MergeError("Model Stock needs at least two fine-tuned models")
    cos = max(0.0, min(1.0, cos))
    return k * cos / (1 + (k - 1) * cos)


def mean_pairwise_cosine(taus: Sequence[np.ndarray]) -> float:
    """The average cosine between every pair of (flattened) task vectors; 0 when one is 0."""
    flat = [t.astype(np.float64).ravel() for t in taus]
    norms = [float(np.linalg.norm(f)) for f in flat]
    values = []
    for i in range(len(flat)):
        for j in range(i + 1, len(flat)):
            if norms[i] == 0 or norms[j] == 0:
                values.append(0.0)
            else:
                values.append(float(flat[i] @ flat[j]) / (norms[i] * norms[j]))
    return float(np.mean(values)) if values else 0.0


def model_stock(states: Sequence[StateDict], base: StateDict) -> tuple[StateDict, dict[str, float]]:
    """Model Stock: per tensor, θ = t·θ_avg + (1 − t)·θ_base with t from the mean pairwise
    cosine of the fine-tunes' task vectors (``model_stock_ratio``). Returns the merge and the
    ratio used per tensor. A tensor no fine-tune changed stays the base's."""
    if len(states) < 2:
        raise MergeError("models: Model Stock needs at least two fine-tuned models and the base")
    taus = task_vectors(states, base)
    average = soup(states)
    out: StateDict = {}
    ratios: dict[str, float] = {}
    for k in base:
        changed = [t[k] for t in taus]
        if not any(np.any(c) for c in changed):
            out[k], ratios[k] = base[k].copy(), 0.0
            continue
        t = model_stock_ratio(mean_pairwise_cosine(changed), len(states))
        out[k] = (np.float32(t) * average[k] + np.float32(1 - t) * base[k]).astype(np.float32)
        ratios[k] = t
    return out, ratios


# --- folders ---------------------------------------------------------------------------------


@dataclass
class ModelWeights:
    """A folder's floating-point tensors as float32 arrays (keyed ``file::name``), with what is
    needed to write them back: each tensor's dtype, and the tensors that are not floating point
    (position ids, …), kept as they are."""

    folder: Path
    state: StateDict
    dtypes: dict[str, Any] = field(default_factory=dict)
    other: dict[str, Any] = field(default_factory=dict)  # name → torch tensor, not merged


def weight_files(folder: str | Path) -> list[Path]:
    """The model's own weight files: every ``*.safetensors`` (``pytorch_model.bin`` where a
    folder has no safetensors beside it), outside export folders (onnx, openvino)."""
    root = Path(folder)
    found = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or STALE_DIRS & set(rel.parts[:-1]):
            continue
        if path.suffix == ".safetensors":
            found.append(path)
        elif path.name == TORCH_WEIGHTS and not any(path.parent.glob("*.safetensors")):
            found.append(path)
    return found


def read_weights(folder: str | Path) -> ModelWeights:
    """Read a sentence-transformers (or transformers) folder's weights. Refuses an unmerged
    LoRA adapter folder and a folder without weights."""
    import torch
    from safetensors.torch import load_file

    from workers.common.store import artifact_ensure

    root = artifact_ensure(folder)
    if (root / "adapter_config.json").is_file():
        raise MergeError(
            f"{root.name} is an unmerged LoRA adapter: merge it into its base first (train with "
            "merge_lora) so that its weights are a whole model's"
        )
    files = weight_files(root)
    if not files:
        raise MergeError(f"{root.name} holds no weight files (*.safetensors, {TORCH_WEIGHTS})")
    out = ModelWeights(folder=root, state={})
    for file in files:
        rel = file.relative_to(root).as_posix()
        if file.suffix == ".safetensors":
            tensors = load_file(str(file), device="cpu")
        else:
            tensors = torch.load(str(file), map_location="cpu", weights_only=True)
        for name, tensor in tensors.items():
            key = f"{rel}{SEP}{name}"
            if tensor.is_floating_point():
                out.state[key] = tensor.detach().to(torch.float32).numpy().copy()
                out.dtypes[key] = tensor.dtype
            else:
                out.other[key] = tensor
    return out


def write_merged(*, template: ModelWeights, state: StateDict, out_dir: str | Path) -> Path:
    """Write ``state`` as a sentence-transformers folder at ``out_dir``: the template's (first
    parent's) files other than weights copied, each weight file written back as safetensors in
    the template's dtypes (a ``pytorch_model.bin`` becomes ``model.safetensors``)."""
    import torch
    from safetensors.torch import save_file

    root, out = template.folder, Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or STALE_DIRS & set(rel.parts[:-1]):
            continue
        if path.suffix in STALE_SUFFIXES or path.name == TORCH_WEIGHTS or path.name == "README.md":
            continue
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, out / rel)
    by_file: dict[str, dict[str, Any]] = {}
    for key, array in state.items():
        rel, _, name = key.rpartition(SEP)
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        by_file.setdefault(rel, {})[name] = tensor.to(template.dtypes.get(key, torch.float32))
    for key, tensor in template.other.items():
        rel, _, name = key.rpartition(SEP)
        by_file.setdefault(rel, {})[name] = tensor.contiguous()
    for rel, tensors in by_file.items():
        target = out / rel
        if target.name == TORCH_WEIGHTS:
            target = target.with_name("model.safetensors")
        target.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(target), metadata={"format": "pt"})
    return out


@dataclass(frozen=True)
class MergeSpec:
    """One merge: the method, the parents' folders in order, the base's, and the settings."""

    method: str
    parents: tuple[str, ...]
    base: str | None = None
    weights: tuple[float, ...] | None = None
    density: float = 0.2
    drop_rate: float = 0.5
    scale: float = 1.0
    seed: int = 0


def load_all(paths: Sequence[str], names: Sequence[str] | None = None) -> list[ModelWeights]:
    """Read every folder and refuse models that are not of one architecture."""
    loaded = [read_weights(p) for p in paths]
    check_compatible([m.state for m in loaded], names)
    return loaded


def merge_states(
    spec: MergeSpec, parents: Sequence[StateDict], base: StateDict | None
) -> tuple[StateDict, dict[str, Any]]:
    """The arithmetic of ``spec`` on loaded states. Returns the merge and facts about it (the
    weights used, Model Stock's ratios)."""
    method = spec.method
    info: dict[str, Any] = {"method": method}
    if method in NEEDS_BASE and base is None:
        raise MergeError(f"base: {method} works on task vectors and needs the common base model")
    if method in ("soup", "greedy_soup"):
        if len(parents) < 2:
            raise MergeError("models: a soup needs at least two models")
        return soup(parents), {**info, "weights": [1 / len(parents)] * len(parents)}
    if method == "linear":
        endpoints = [*parents, *([base] if base is not None else [])]
        if len(endpoints) < 2:
            raise MergeError("models: a linear merge needs two models, or a model and its base")
        w = normalised_weights(spec.weights, len(endpoints))
        return linear(endpoints, w), {**info, "weights": w}
    if method == "slerp":
        endpoints = [*parents, *([base] if base is not None else [])]
        if len(endpoints) != 2:
            raise MergeError("models: SLERP takes exactly two models (or one model and its base)")
        w = normalised_weights(spec.weights or (0.5, 0.5), 2)
        # w[0] is the first model's share: the arc runs from it (t = 0) to the second.
        return slerp(endpoints[0], endpoints[1], w[1]), {**info, "weights": w}
    assert base is not None
    if method == "ties":
        if spec.weights is not None and len(spec.weights) != len(parents):
            raise MergeError(f"weights: {len(spec.weights)} given for {len(parents)} models")
        merged = ties(parents, base, density=spec.density, scale=spec.scale,
                      weights=spec.weights)  # fmt: skip
        return merged, {**info, "weights": list(spec.weights or [1.0] * len(parents)),
                        "density": spec.density, "scale": spec.scale}  # fmt: skip
    if method == "dare":
        w = normalised_weights(spec.weights, len(parents))
        merged = dare(parents, base, drop_rate=spec.drop_rate, seed=spec.seed, weights=w)
        return merged, {**info, "weights": w, "drop_rate": spec.drop_rate, "seed": spec.seed}
    if method == "model_stock":
        merged, ratios = model_stock(parents, base)
        values = list(ratios.values())
        return merged, {
            **info,
            "ratio_mean": float(np.mean(values)),
            "ratio_min": float(np.min(values)),
            "ratio_max": float(np.max(values)),
            "tensors": len(values),
        }
    raise MergeError(f"method: unknown method {method!r} (one of {', '.join(METHODS)})")


def merge_folders(
    spec: MergeSpec, *, out_dir: str | Path, names: Sequence[str] | None = None
) -> dict[str, Any]:
    """Read the parents (and the base), merge as ``spec`` says and write the result at
    ``out_dir`` (a sentence-transformers folder). Returns facts about the merge."""
    paths = [*spec.parents, *([spec.base] if spec.base else [])]
    loaded = load_all(paths, names)
    parents = [m.state for m in loaded[: len(spec.parents)]]
    base = loaded[-1].state if spec.base else None
    merged, info = merge_states(spec, parents, base)
    write_merged(template=loaded[0], state=merged, out_dir=out_dir)
    info["parameters"] = int(sum(a.size for a in merged.values()))
    return info
