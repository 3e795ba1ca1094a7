"""`rdo eval accuracy`: ties, bootstrap interval, confidence bins, ranked rows, the printed table."""

from __future__ import annotations

import json

import pytest
import torch

from rdo.config import EvalAccuracyConfig
from rdo.evaluate.accuracy import accuracy_metrics, bootstrap_ci, comparisons_of, confidence_bins, eval_accuracy


def cfg(**kw) -> EvalAccuracyConfig:
    return EvalAccuracyConfig(scorer="s", dataset_name="d", **kw)


def test_ties_count_as_wrong():
    comp = {"R": [1.0, 0.0, -2.0, 0.5], "f_forward": [None] * 4, "f_reverse": [None] * 4, "consistent": [], "checked": []}
    m = accuracy_metrics(comp, "pair", "reward", cfg(bootstrap=0))
    assert m["accuracy"] == 0.5 and m["ties"] == 1 and m["ci95"] is None  # 2 of 4: the tie is wrong
    constant = {**comp, "R": [0.0] * 4}
    assert accuracy_metrics(constant, "pair", "reward", cfg(bootstrap=0))["accuracy"] == 0.0


def test_bootstrap_interval():
    correct = torch.tensor([True] * 80 + [False] * 20)
    lo, hi = bootstrap_ci(correct, 1000, seed=0)
    assert lo < 0.8 < hi and 0.68 < lo and hi < 0.9  # binomial sd = 0.04, so about 0.72-0.88
    assert bootstrap_ci(correct, 1000, seed=0) == [lo, hi]  # seeded
    assert bootstrap_ci(torch.ones(5, dtype=torch.bool), 100, seed=0) == [1.0, 1.0]


def test_confidence_bins_equal_count_and_fixed_edges():
    conf = torch.tensor([0.1, 0.2, 0.3, 0.4, 1.5, 1.6, 2.5, 3.0])
    correct = torch.tensor([False, True, False, True, True, True, True, True])
    bins = confidence_bins(conf, correct, num_bins=2, edges=None)
    assert [(b["lo"], b["hi"], b["n"], b["accuracy"]) for b in bins] == [
        (pytest.approx(0.1), pytest.approx(0.4), 4, 0.5), (pytest.approx(1.5), pytest.approx(3.0), 4, 1.0)]
    fixed = confidence_bins(conf, correct, num_bins=5, edges=[0.0, 1.0, 2.0])
    # [0, 1), [1, 2], and (2, inf) added because |R| exceeds the last edge
    assert [(b["lo"], b["hi"], b["n"], b["accuracy"]) for b in fixed] == [
        (0.0, 1.0, 4, 0.5), (1.0, 2.0, 2, 1.0), (2.0, float("inf"), 2, 1.0)]
    with pytest.raises(ValueError, match="increasing"):
        cfg(bin_edges="1,0")


def test_ranked_rows_count_every_pair_with_different_scores():
    recs = [{"scores": [0.0, 2.0, 1.0]}]
    # R[i][j] = how much j beats i: pairs with s_j > s_i are (0,1), (0,2), (2,1)
    R = [[0.0, 1.0, -0.5], [-1.0, 0.0, -2.0], [0.5, 2.0, 0.0]]
    comp = comparisons_of([{"cols": {"rdo_reward_diff": R}, "diag": {}}], recs, "ranked")
    assert sorted(comp["R"]) == [-0.5, 1.0, 2.0]


def test_eval_accuracy_table_and_json(trained_scorers, tmp_path, capsys):
    from conftest import write_jsonl
    from scorer_helpers import learnable_pairs

    s = trained_scorers
    data = write_jsonl(tmp_path / "held_out.jsonl", learnable_pairs(10, seed=9))
    m = eval_accuracy(EvalAccuracyConfig(scorer=str(s["diff"]), dataset_name=str(data), num_bins=3, bootstrap=50))
    out = capsys.readouterr().out
    assert "confidence vs accuracy" in out and "position consistency" in out
    printed = json.loads(out[out.index('{\n  "scorer"'):])  # the JSON follows the table when --output is not set
    assert printed["n_pairs"] == 10 and printed["accuracy"] == m["accuracy"] and len(printed["bins"]) == 3
