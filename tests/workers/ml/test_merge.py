"""Merge arithmetic (workers.ml.merge): hand-computed tensors, the identities every method must
keep, Model Stock's ratio against the paper's formula, and the folder round trip on the tiny
BERT (the merged folder loads and encodes like any model)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from workers.ml import merge
from workers.ml.merge import MergeError, MergeSpec


def state(**arrays) -> dict[str, np.ndarray]:
    return {k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()}


def perturbed(folder: Path, out: Path, *, seed: int, scale: float = 0.05) -> Path:
    """A copy of a model folder whose floating-point weights moved by seeded noise: another
    "fine-tune" of the same base."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(folder, out)
    generator = torch.Generator().manual_seed(seed)
    for file in out.rglob("*.safetensors"):
        tensors = load_file(str(file))
        moved = {
            k: (v + scale * torch.randn(v.shape, generator=generator, dtype=v.dtype)).contiguous()
            if v.is_floating_point() else v
            for k, v in tensors.items()
        }  # fmt: skip
        save_file(moved, str(file), metadata={"format": "pt"})
    return out


# --- arithmetic ------------------------------------------------------------------------------


def test_uniform_soup_of_identical_models_is_the_model():
    a = state(w=np.random.default_rng(0).normal(size=(5, 3)), b=[1.5, -2.0])
    for merged in (merge.soup([a, a]), merge.linear([a, a])):
        assert all(np.array_equal(merged[k], a[k]) for k in a)
    three = merge.soup([a, a, a])
    assert all(np.allclose(three[k], a[k], atol=1e-6) for k in a)


def test_soup_is_the_mean_and_linear_weights_are_normalised():
    a, b = state(w=[1.0, 2.0]), state(w=[3.0, 6.0])
    assert merge.soup([a, b])["w"].tolist() == [2.0, 4.0]
    assert merge.linear([a, b], [3, 1])["w"].tolist() == [1.5, 3.0]  # 0.75·a + 0.25·b
    assert merge.linear([a, b], [0.3, 0.1])["w"].tolist() == [1.5, 3.0]


def test_linear_weight_zero_and_one_give_the_parents_exactly():
    rng = np.random.default_rng(1)
    a = state(w=rng.normal(size=(4, 4)), b=rng.normal(size=7))
    b = state(w=rng.normal(size=(4, 4)), b=rng.normal(size=7))
    for weights, expected in (([1, 0], a), ([0, 1], b)):
        merged = merge.linear([a, b], weights)
        assert all(np.array_equal(merged[k], expected[k]) for k in a)
    for t, expected in ((0.0, a), (1.0, b)):
        merged = merge.slerp(a, b, t)
        assert all(np.array_equal(merged[k], expected[k]) for k in a)


def test_bad_weights_name_the_field():
    a = state(w=[1.0])
    with pytest.raises(MergeError, match="weights: 3 given for 2 models"):
        merge.linear([a, a], [1, 1, 1])
    with pytest.raises(MergeError, match="weights: every weight must be 0 or more"):
        merge.linear([a, a], [1, -1])
    with pytest.raises(MergeError, match="weights: at least one weight"):
        merge.linear([a, a], [0, 0])


def test_slerp_of_identical_is_identity_and_of_orthogonal_is_the_normalised_mid():
    a = state(w=[0.3, -1.2, 4.0])
    assert np.array_equal(merge.slerp(a, a, 0.37)["w"], a["w"])
    x, y = state(w=[1.0, 0.0]), state(w=[0.0, 1.0])
    mid = merge.slerp(x, y, 0.5)["w"]
    assert np.allclose(mid, [1 / math.sqrt(2), 1 / math.sqrt(2)], atol=1e-7)
    assert math.isclose(float(np.linalg.norm(mid)), 1.0, abs_tol=1e-6)  # on the arc, not inside
    # A quarter of the way along the arc: 22.5° from x.
    quarter = merge.slerp(x, y, 0.25)["w"]
    assert np.allclose(quarter, [math.cos(math.pi / 8), math.sin(math.pi / 8)], atol=1e-7)


def test_ties_against_hand_computed_vectors():
    base = state(w=[10.0, 10.0, 10.0, 10.0])
    one = state(w=[11.0, 8.0, 10.5, 13.0])  # τ₁ = [ 1, -2, 0.5, 3]
    two = state(w=[8.5, 12.5, 10.1, 12.0])  # τ₂ = [-1.5, 2.5, 0.1, 2]
    # density 0.5 keeps two entries each: τ₁' = [0, -2, 0, 3], τ₂' = [0, 2.5, 0, 2].
    # Elected signs of the sums [0, 0.5, 0, 5]: [0, +, 0, +], so τ₁'s -2 disagrees and is
    # left out; the disjoint means of the values that agree: [0, 2.5, 0, (3 + 2) / 2].
    merged = merge.ties([one, two], base, density=0.5)
    assert merged["w"].tolist() == [10.0, 12.5, 10.0, 12.5]
    scaled = merge.ties([one, two], base, density=0.5, scale=0.5)
    assert scaled["w"].tolist() == [10.0, 11.25, 10.0, 11.25]
    # A weight on τ₁ three times τ₂'s turns the vote on the second entry: -2·3 + 2.5 < 0.
    weighted = merge.ties([one, two], base, density=0.5, weights=[3, 1])
    assert weighted["w"].tolist() == [10.0, 8.0, 10.0, 10.0 + (3 * 3 + 2) / 4]
    # Density 1 trims nothing: with two agreeing models it is their mean.
    assert merge.ties([one, one], base, density=1.0)["w"].tolist() == one["w"].tolist()


def test_dare_drops_and_rescales_with_a_seed():
    rng = np.random.default_rng(3)
    base = state(w=rng.normal(size=4000))
    fine = state(w=base["w"] + rng.normal(size=4000).astype(np.float32))
    tau = fine["w"] - base["w"]
    merged = merge.dare([fine], base, drop_rate=0.75, seed=7)
    delta = merged["w"] - base["w"]
    kept = ~np.isclose(delta, 0.0)
    # Survivors are τ / (1 − p), the rest exactly the base's.
    assert np.allclose(delta[kept], tau[kept] * 4, rtol=1e-5)
    assert np.array_equal(merged["w"][~kept], base["w"][~kept])
    assert 0.2 < kept.mean() < 0.3
    # The same mask as a generator of that seed draws, and the same merge again.
    expected_mask = np.random.default_rng(7).random(4000) >= 0.75
    assert np.array_equal(kept, expected_mask)
    again = merge.dare([fine], base, drop_rate=0.75, seed=7)
    assert np.array_equal(again["w"], merged["w"])
    other = merge.dare([fine], base, drop_rate=0.75, seed=8)
    assert not np.array_equal(other["w"], merged["w"])
    # No drop: the average of the task vectors added to the base (task arithmetic).
    two = state(w=base["w"] + 2 * tau)
    plain = merge.dare([fine, two], base, drop_rate=0.0)
    assert np.allclose(plain["w"], base["w"] + 1.5 * tau, atol=1e-5)


def test_model_stock_ratio_is_the_papers_formula():
    for k in (2, 3, 5):
        for cos in (0.1, 0.5, 0.9):
            assert merge.model_stock_ratio(cos, k) == pytest.approx(k * cos / (1 + (k - 1) * cos))
    assert merge.model_stock_ratio(1.0, 2) == 1.0
    assert merge.model_stock_ratio(-0.3, 2) == 0.0  # cut: fine-tunes that disagree
    assert merge.model_stock_ratio(0.5, 2) == pytest.approx(2 / 3)


def test_model_stock_interpolates_the_average_towards_the_base_by_that_ratio():
    base = state(w=[1.0, 1.0], still=[5.0])
    # Task vectors [1, 0] and [0.5, √3/2]: 60° apart, cos θ = 0.5 → t = 2·0.5 / 1.5 = 2/3.
    one = state(w=[2.0, 1.0], still=[5.0])
    two = state(w=[1.5, 1.0 + math.sqrt(3) / 2], still=[5.0])
    merged, ratios = merge.model_stock([one, two], base)
    t = 2 / 3
    average = (one["w"] + two["w"]) / 2
    assert ratios["w"] == pytest.approx(t)
    assert np.allclose(merged["w"], t * average + (1 - t) * base["w"], atol=1e-6)
    assert ratios["still"] == 0.0 and merged["still"].tolist() == [5.0]
    with pytest.raises(MergeError, match="at least two fine-tuned models"):
        merge.model_stock([one], base)


def test_different_architectures_are_refused_naming_the_tensor():
    a = state(w=[1.0, 2.0], v=[1.0])
    with pytest.raises(MergeError, match=r"tensor w: shape \(3,\) in model 2, \(2,\) in model 1"):
        merge.soup([a, state(w=[1.0, 2.0, 3.0], v=[1.0])])
    with pytest.raises(MergeError, match="B has no tensor v that A has"):
        merge.check_compatible([a, state(w=[1.0, 2.0])], ["A", "B"])
    with pytest.raises(MergeError, match="base: ties works on task vectors"):
        merge.merge_states(MergeSpec(method="ties", parents=("x", "y")), [a, a], None)


# --- folders ---------------------------------------------------------------------------------


def test_folders_merge_into_a_loadable_sentence_transformers_folder(tiny_model_path, tmp_path):
    from safetensors.torch import load_file

    from workers.ml.encode import encode_texts, load_encoder

    other = perturbed(tiny_model_path, tmp_path / "other", seed=1)
    out = tmp_path / "soup"
    info = merge.merge_folders(
        MergeSpec(method="soup", parents=(str(tiny_model_path), str(other))), out_dir=out
    )
    assert info["weights"] == [0.5, 0.5] and info["parameters"] > 90_000
    # The first parent's tokenizer, configs and modules are copied; the weights are new.
    for name in ("modules.json", "tokenizer.json", "config.json"):
        assert (out / name).read_bytes() == (tiny_model_path / name).read_bytes()
    assert (out / "1_Pooling" / "config.json").is_file()
    a, b = (load_file(str(p / "model.safetensors")) for p in (tiny_model_path, other))
    merged = load_file(str(out / "model.safetensors"))
    key = next(k for k, v in a.items() if v.is_floating_point() and v.ndim == 2)
    assert np.allclose(merged[key].numpy(), (a[key].numpy() + b[key].numpy()) / 2, atol=1e-6)
    encoder = load_encoder(path=str(out), layout="sentence-transformers", pooling="mean",
                           normalize=True, max_seq_length=32)  # fmt: skip
    assert encode_texts(encoder=encoder, texts=["red planet"], normalize=True).shape == (1, 64)

    # Weight 1 on the first model writes its weights back unchanged.
    same = tmp_path / "same"
    merge.merge_folders(MergeSpec(method="linear", parents=(str(tiny_model_path), str(other)),
                                  weights=(1.0, 0.0)), out_dir=same)  # fmt: skip
    written = load_file(str(same / "model.safetensors"))
    assert all(np.array_equal(written[k].numpy(), a[k].numpy()) for k in a)


def test_folders_of_another_architecture_are_refused(tiny_model_path, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    other = shutil.copytree(tiny_model_path, tmp_path / "wider")
    file = other / "model.safetensors"
    tensors = load_file(str(file))
    name = sorted(k for k, v in tensors.items() if v.ndim == 2)[0]
    tensors[name] = torch.zeros(tensors[name].shape[0] + 1, tensors[name].shape[1])
    save_file(tensors, str(file))
    with pytest.raises(MergeError, match=rf"tensor {name}: shape .* not the same architecture"):
        merge.merge_folders(MergeSpec(method="soup", parents=(str(tiny_model_path), str(other))),
                            out_dir=tmp_path / "out")  # fmt: skip
    adapter = shutil.copytree(tiny_model_path, tmp_path / "adapter")
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    with pytest.raises(MergeError, match="unmerged LoRA adapter"):
        merge.read_weights(adapter)
