"""The coefficient policy: R -> weight, against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from rdo.core.coefficients import CoefficientPolicy, format_stats

R = [4.0, 1.0, 0.0, -2.0]


def test_clip_raises_nonpositive_R_to_the_floor_then_normalises_to_mean_one():
    # alpha = 0.5, floor 0.01: R^a = [2, 1, 0.1, 0.1]; mean 0.8 -> [2.5, 1.25, 0.125, 0.125]
    w, keep, stats = CoefficientPolicy(alpha=0.5, nonpositive="clip", floor=0.01).weights(R)
    assert w.tolist() == pytest.approx([2.5, 1.25, 0.125, 0.125])
    assert keep.all() and w.mean().item() == pytest.approx(1.0)
    assert stats["frac_nonpositive"] == 0.5 and stats["frac_raised_to_floor"] == 0.5 and stats["normalizer"] == pytest.approx(0.8)


def test_normalize_none_is_the_paper_literally():
    w, _, _ = CoefficientPolicy(alpha=1.0, normalize="none").weights([2.0, 0.5])
    assert w.tolist() == [2.0, 0.5]  # R^1


def test_drop_removes_nonpositive_pairs_and_normalises_over_the_rest():
    # alpha = 1: kept R = [4, 1], mean 2.5 -> [1.6, 0.4]; dropped rows get weight 0
    w, keep, stats = CoefficientPolicy(alpha=1.0, nonpositive="drop").weights(R)
    assert keep.tolist() == [True, True, False, False]
    assert w.tolist() == pytest.approx([1.6, 0.4, 0.0, 0.0])
    assert stats["n_kept"] == 2 and stats["frac_dropped"] == 0.5


def test_abs_trusts_the_magnitude_not_the_sign():
    # alpha = 1, normalize none: |R| = [4, 1, 0 -> floor 0.01, 2]
    w, keep, _ = CoefficientPolicy(alpha=1.0, nonpositive="abs", normalize="none").weights(R)
    assert keep.all() and w.tolist() == pytest.approx([4.0, 1.0, 0.01, 2.0])


def test_alpha_zero_is_exactly_one_whatever_the_policy():
    for nonpositive in ("clip", "drop", "abs"):
        w, keep, _ = CoefficientPolicy(alpha=0.0, nonpositive=nonpositive).weights(R)
        assert w.tolist() == [1.0] * 4 and keep.all()  # exactly, nothing dropped
    w, keep, stats = CoefficientPolicy(alpha=0.0).weights(None, n=3)  # no R at all
    assert w.tolist() == [1.0] * 3 and stats["reward_diff"] is None
    assert "plain method" in format_stats(stats)


def test_bad_settings_and_values_say_what_to_change():
    with pytest.raises(ValueError, match="alpha=-0.5 must be a finite number >= 0"):
        CoefficientPolicy(alpha=-0.5)
    with pytest.raises(ValueError, match="choose one of"):
        CoefficientPolicy(nonpositive="zero")
    with pytest.raises(ValueError, match="floor=0 must be > 0"):
        CoefficientPolicy(floor=0)
    with pytest.raises(ValueError, match="NaN or infinite"):
        CoefficientPolicy().weights([1.0, math.nan])
    with pytest.raises(ValueError, match="leaves no training pairs"):
        CoefficientPolicy(alpha=1.0, nonpositive="drop").weights([-1.0, 0.0])


def test_stats_report_quantiles_and_print():
    import numpy as np

    r = np.linspace(-1, 3, 101)
    _, _, stats = CoefficientPolicy(alpha=0.5).weights(torch.tensor(r))
    assert {"q00", "q05", "q50", "q95", "q100", "mean", "std"} <= set(stats["weight"])
    # the same statistics computed independently: clip at 0.01, square root, mean 1
    w = np.sqrt(np.maximum(r, 0.01))
    w = w / w.mean()
    for q in (0, 5, 25, 50, 75, 95, 100):
        assert stats["weight"][f"q{q:02d}"] == pytest.approx(np.quantile(w, q / 100), rel=1e-6), q
        assert stats["reward_diff"][f"q{q:02d}"] == pytest.approx(np.quantile(r, q / 100), abs=1e-9), q
    assert stats["weight"]["mean"] == pytest.approx(1.0) and stats["weight"]["std"] == pytest.approx(w.std(ddof=1), rel=1e-6)
    assert stats["reward_diff"]["mean"] == pytest.approx(1.0)
    assert stats["frac_nonpositive"] == pytest.approx(26 / 101)  # -1, -0.96, ..., 0
    assert stats["frac_raised_to_floor"] == pytest.approx(26 / 101)  # 0.04 is already above the floor
    assert stats["normalizer"] == pytest.approx(np.sqrt(np.maximum(r, 0.01)).mean(), rel=1e-9)
    text = format_stats(stats)
    assert "alpha=0.5" in text and "raised to floor 25.7%" in text and "(25.7% <= 0)" in text
