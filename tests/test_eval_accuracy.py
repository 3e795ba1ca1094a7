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


@pytest.fixture(scope="module")
def scorers(trained_scorers):
    return trained_scorers


def held_out_pairs() -> list[dict]:
    """10 fresh pairs, 3 of them with chosen and rejected swapped, so a good scorer gets about 7 right."""
    from scorer_helpers import learnable_pairs

    rows = learnable_pairs(10, seed=9)
    for i in (0, 3, 6):
        rows[i] = dict(rows[i], chosen=rows[i]["rejected"], rejected=rows[i]["chosen"])
    return rows


def direct_f(folder, rows) -> list[tuple[float, float]]:
    """(f(x, y_w, y_l), f(x, y_l, y_w)) per pair, each comparison scored alone."""
    from rdo.score.scorers import load_scorer

    s = load_scorer(str(folder), device="cpu")
    ids = lambda t: s.tok(t, add_special_tokens=False)["input_ids"]  # noqa: E731
    out = []
    for r in rows:
        x, w, l = ids(r["prompt"]), ids(r["chosen"]), ids(r["rejected"])
        out.append((s.forward([s.diff_encoder.assemble(x, w, l)]).item(), s.forward([s.diff_encoder.assemble(x, l, w)]).item()))
    return out


def test_eval_accuracy_table_and_json(scorers, tmp_path, capsys):
    from conftest import write_jsonl

    rows = held_out_pairs()
    data = write_jsonl(tmp_path / "held_out.jsonl", rows)
    f = direct_f(scorers["diff"], rows)
    m = eval_accuracy(EvalAccuracyConfig(scorer=str(scorers["diff"]), dataset_name=str(data), num_bins=3, bootstrap=50))
    out = capsys.readouterr().out
    correct = sum((fw - fl) / 2 > 0 for fw, fl in f)  # counted here from the comparisons scored one by one
    assert 0 < correct < 10  # the swapped rows make a value a sign or counting bug would move
    assert m["accuracy"] == pytest.approx(correct / 10)
    assert f"accuracy {correct / 10:.3f}" in out
    assert m["accuracy_single_pass"] == pytest.approx(sum(fw > 0 for fw, _ in f) / 10)
    assert m["accuracy_reversed"] == pytest.approx(sum(fl < 0 for _, fl in f) / 10)
    assert m["position_consistency"] == pytest.approx(sum((fw > 0) != (fl > 0) for fw, fl in f) / 10)
    assert "confidence vs accuracy" in out and "position consistency" in out
    printed = json.loads(out[out.index('{\n  "scorer"'):])  # the JSON follows the table when --output is not set
    assert printed["n_pairs"] == 10 and printed["accuracy"] == m["accuracy"] and len(printed["bins"]) == 3


def test_eval_accuracy_cli_no_symmetrize_bin_edges_and_ranked_rows(scorers, tmp_path):
    from conftest import write_jsonl
    from rdo.cli import main
    from rdo.score.scorers import load_scorer
    from scorer_helpers import ranked_rows

    rows = held_out_pairs()
    data = write_jsonl(tmp_path / "held_out.jsonl", rows)
    f = direct_f(scorers["diff"], rows)
    R = [fw for fw, _ in f]  # the paper's single pass
    a = sorted(abs(r) for r in R)
    mid = (a[4] + a[5]) / 2  # between two values, so float noise cannot move a pair across the edge
    edges = [0.0, mid, max(abs(r) for r in R) + 1]
    out = tmp_path / "single.json"
    assert main(["eval", "accuracy", "--scorer", str(scorers["diff"]), "--dataset_name", str(data), "--no-symmetrize",
                 "--bin_edges", ",".join(map(str, edges)), "--bootstrap", "0", "--output", str(out)]) == 0
    m = json.loads(out.read_text())
    assert m["symmetrize"] is False and m["accuracy"] == pytest.approx(sum(r > 0 for r in R) / 10)
    assert m["accuracy_reversed"] is None  # one order only
    low = [r for r in R if abs(r) < mid]
    high = [r for r in R if abs(r) >= mid]
    assert [(b["lo"], b["n"]) for b in m["bins"]] == [(0.0, len(low)), (pytest.approx(mid), len(high))]
    assert m["bins"][0]["accuracy"] == pytest.approx(sum(r > 0 for r in low) / len(low))
    assert m["bins"][1]["accuracy"] == pytest.approx(sum(r > 0 for r in high) / len(high))

    # ranked rows with a reward model: every pair with different scores, each response scored alone
    ranked = ranked_rows(6, seed=11)
    ranked_file = write_jsonl(tmp_path / "ranked.jsonl", ranked)
    out = tmp_path / "ranked.json"
    assert main(["eval", "accuracy", "--scorer", str(scorers["rm"]), "--dataset_name", str(ranked_file),
                 "--bootstrap", "0", "--output", str(out)]) == 0
    rm = load_scorer(str(scorers["rm"]), device="cpu")
    ids = lambda t: rm.tok(t, add_special_tokens=False)["input_ids"]  # noqa: E731
    right = total = 0
    for row in ranked:
        r = [rm.forward([[1] + ids(row["query"]) + ids(y) + [2]]).item() for y in row["responses"]]
        s = row["scores"]
        pairs = [(i, j) for i in range(3) for j in range(3) if s[j] > s[i]]
        total += len(pairs)
        right += sum(r[j] > r[i] for i, j in pairs)
    m = json.loads(out.read_text())
    assert m["n_pairs"] == total == 18 and m["accuracy"] == pytest.approx(right / total)
