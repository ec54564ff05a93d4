"""Known answers for the statistics behind the comparison page: exact enumeration by hand,
closed forms, and scipy called directly with the same settings."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from apps.runs.significance import (
    bootstrap_ci,
    format_p,
    holm,
    paired_compare,
    paired_permutation_test,
    paired_t_test,
    verdict,
)


def exact_sign_flip_p(d: list[float]) -> float:
    """Two-sided p of the paired randomization test, by enumerating every sign flip."""
    observed = abs(sum(d)) / len(d)
    flips = list(itertools.product((1, -1), repeat=len(d)))
    extreme = sum(
        1
        for signs in flips
        if abs(sum(s * x for s, x in zip(signs, d, strict=True))) / len(d) >= observed - 1e-12
    )
    return extreme / len(flips)


def test_permutation_three_queries_all_better_is_two_in_eight():
    # Flips of (1, 2, 3): only all-plus and all-minus reach |mean| 2 → 2/8.
    assert paired_permutation_test([0, 0, 0], [1, 2, 3]) == pytest.approx(0.25)
    assert exact_sign_flip_p([1, 2, 3]) == 0.25


def test_permutation_matches_hand_enumeration_when_exact():
    a = [0.2, 0.5, 0.1, 0.9, 0.4, 0.3, 0.0, 0.7]
    b = [0.3, 0.4, 0.6, 1.0, 0.4, 0.8, 0.2, 0.6]
    d = [y - x for x, y in zip(a, b, strict=True)]
    # 2**8 = 256 ≤ 10,000 flips: scipy enumerates, so the value is exact.
    assert paired_permutation_test(a, b) == pytest.approx(exact_sign_flip_p(d))


def test_permutation_sampled_is_seeded_and_close_to_exact():
    rng = np.random.default_rng(7)
    a = rng.random(16)
    b = a + rng.normal(0.08, 0.2, 16)
    exact = exact_sign_flip_p(list(b - a))  # 65,536 flips, more than the 10,000 drawn
    first = paired_permutation_test(a, b, seed=1)
    assert first == paired_permutation_test(a, b, seed=1)
    assert abs(first - exact) < 0.015


def test_permutation_of_identical_runs_is_one():
    assert paired_permutation_test([0.1, 0.5, 0.9], [0.1, 0.5, 0.9]) == 1.0


def test_t_test_closed_form_two_degrees_of_freedom():
    # d = (1, 2, 3): t = 2 / (1/√3) = 2√3 with 2 df, where P(|T| > t) = 1 − t/√(t² + 2).
    t = 2 * math.sqrt(3)
    assert paired_t_test([0, 0, 0], [1, 2, 3]) == pytest.approx(1 - t / math.sqrt(t * t + 2))
    assert paired_t_test([0, 0, 0], [1, 2, 3]) == pytest.approx(0.0741799, abs=1e-6)


def test_t_test_agrees_with_scipy_and_identical_runs_are_one():
    a = [0.2, 0.5, 0.1, 0.9, 0.4]
    b = [0.3, 0.4, 0.6, 1.0, 0.5]
    assert paired_t_test(a, b) == pytest.approx(stats.ttest_rel(b, a).pvalue)
    assert paired_t_test(a, a) == 1.0  # scipy says NaN for 0/0


def test_holm_known_example():
    # Sorted: .005×4 = .02, .01×3 = .03, .03×2 = .06, .04×1 = .04 → raised to .06 (monotone).
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    rejected = [p <= 0.05 for p in holm([0.01, 0.04, 0.03, 0.005])]
    assert rejected == [True, False, False, True]  # stops at the third smallest, as Holm does
    assert holm([0.5]) == [0.5]
    assert holm([0.4, 0.5, 0.6]) == pytest.approx([1.0, 1.0, 1.0])  # capped at 1
    assert holm([]) == []


def test_bootstrap_matches_scipy_and_is_plausible():
    d = np.arange(1.0, 11.0)
    low, high = bootstrap_ci(d)
    direct = stats.bootstrap(
        (d,), np.mean, n_resamples=10_000, method="BCa", rng=np.random.default_rng(0)
    ).confidence_interval
    assert (low, high) == pytest.approx((direct.low, direct.high))
    # Around the mean 5.5, about ±1.96·s/√n = ±1.88 wide.
    assert low < 5.5 < high and 3.2 < high - low < 4.2


def test_bootstrap_of_constant_deltas_is_that_value():
    assert bootstrap_ci([0.0, 0.0, 0.0]) == (0.0, 0.0)
    assert bootstrap_ci([0.25]) == (0.25, 0.25)


def test_rows_give_the_same_answers_as_separate_calls():
    rng = np.random.default_rng(3)
    a = rng.random((3, 40))
    b = a + rng.normal(0.05, 0.2, (3, 40))
    b[1] = a[1]
    together = paired_compare(a, b)
    for i in range(3):
        alone = paired_compare(a[i], b[i])
        assert together[i].p_perm == pytest.approx(alone.p_perm)
        assert together[i].p_t == pytest.approx(alone.p_t)
        assert (together[i].ci_low, together[i].ci_high) == pytest.approx(
            (alone.ci_low, alone.ci_high)
        )
    assert together[1].delta == 0 and together[1].p_perm == 1.0 and together[1].p_t == 1.0


def test_paired_compare_fields():
    r = paired_compare([0.0, 0.0, 0.0], [1.0, 2.0, 3.0])
    assert (r.n, r.mean_a, r.mean_b, r.delta) == (3, 0.0, 2.0, 2.0)
    assert r.p_perm == pytest.approx(0.25) and r.p_t == pytest.approx(0.0741799, abs=1e-6)
    assert r.ci_low <= 2.0 <= r.ci_high


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError):
        paired_t_test([1, 2], [1, 2, 3])


def test_wording():
    assert verdict(0.41) == "not significant (p = 0.41 after Holm)"
    assert verdict(0.003) == "significant (p = 0.003 after Holm)"
    assert verdict(0.0001) == "significant (p < 0.001 after Holm)"
    assert verdict(0.05) == "significant (p = 0.05 after Holm)"  # p ≤ α
    assert format_p(0.0123) == "0.01" and format_p(0.00512) == "0.005"
