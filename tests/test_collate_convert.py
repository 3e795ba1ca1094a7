"""Data plumbing for RRHF and KTO: collators on literal token lists, pair conversions, KL completions,
ranked coefficient matrices (validation and weights), and the reference cache key."""

from __future__ import annotations

import pytest
import torch

from rdo.core.coefficients import CoefficientPolicy, ranked_weights
from rdo.data import DataError, load_records
from rdo.data.collate import RankedCollator, UnpairedCollator
from rdo.data.convert import assign_kl_completions, convert_records, pair_to_ranked, pair_to_unpaired
from rdo.train.reference import load_or_compute

from conftest import write_jsonl

PAD = 0


# ---------------------------------------------------------------------------------------------
# Collators
# ---------------------------------------------------------------------------------------------


def test_ranked_collator_literal():
    features = [
        {"prompt_ids": [1, 5], "responses_ids": [[6, 2], [7, 8, 2]], "scores": [0.0, 1.0],
         "rdo_weight": [[0.0, 1.5], [0.0, 0.0]], "rdo_row": 3},
        {"prompt_ids": [1], "responses_ids": [[9, 2], [10, 2], [11, 12, 13, 2]], "scores": [3.0, 1.0, 2.0],
         "rdo_weight": [[0.0, 0.0, 0.0], [0.5, 0.0, 0.7], [0.9, 0.0, 0.0]], "rdo_row": 7},
    ]
    batch = RankedCollator(PAD)(features)
    # every (prompt, response), prompt by prompt: 2 + 3 = 5 rows, width 5
    assert batch["input_ids"].tolist() == [
        [1, 5, 6, 2, 0],
        [1, 5, 7, 8, 2],
        [1, 9, 2, 0, 0],
        [1, 10, 2, 0, 0],
        [1, 11, 12, 13, 2],
    ]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 0, 0], [1] * 5]
    assert batch["loss_mask"].tolist() == [
        [0, 0, 1, 1, 0], [0, 0, 1, 1, 1], [0, 1, 1, 0, 0], [0, 1, 1, 0, 0], [0, 1, 1, 1, 1],
    ]
    assert batch["response_mask"].tolist() == [[True, True, False], [True, True, True]]
    assert batch["scores"].tolist() == [[0.0, 1.0, 0.0], [3.0, 1.0, 2.0]]
    assert batch["rdo_weight"].shape == (2, 3, 3)
    assert batch["rdo_weight"][0].tolist() == [[0.0, 1.5, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    torch.testing.assert_close(batch["rdo_weight"][1], torch.tensor([[0, 0, 0], [0.5, 0, 0.7], [0.9, 0, 0]]))
    assert batch["rdo_row"].tolist() == [3, 7]


def test_unpaired_collator_literal():
    features = [
        {"prompt_ids": [1, 5], "completion_ids": [6, 2], "kl_completion_ids": [9, 10, 2], "label": True,
         "rdo_weight": 1.5, "ref_logps": -3.0, "ref_kl_logps": -4.0, "rdo_row": 1},
        {"prompt_ids": [1], "completion_ids": [9, 10, 2], "kl_completion_ids": [6, 2], "label": False,
         "rdo_weight": 0.5, "ref_logps": -5.0, "ref_kl_logps": -6.0, "rdo_row": 2},
    ]
    batch = UnpairedCollator(PAD)(features)
    # rows [0, B): prompt + completion; rows [B, 2B): prompt + KL completion
    assert batch["input_ids"].tolist() == [[1, 5, 6, 2, 0], [1, 9, 10, 2, 0], [1, 5, 9, 10, 2], [1, 6, 2, 0, 0]]
    assert batch["loss_mask"].tolist() == [[0, 0, 1, 1, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [0, 1, 1, 0, 0]]
    assert batch["label"].tolist() == [True, False]
    assert batch["rdo_weight"].tolist() == [1.5, 0.5]
    assert batch["ref_logps"].tolist() == [-3.0, -5.0]
    assert batch["ref_kl_logps"].tolist() == [-4.0, -6.0]


# ---------------------------------------------------------------------------------------------
# Pair conversions and KL completions
# ---------------------------------------------------------------------------------------------

PAIR = {"prompt": "q", "chosen": "good", "rejected": "bad", "rdo_row": 4, "rdo_reward_diff": 2.5, "id": "x"}


def test_pair_to_ranked():
    r = pair_to_ranked(PAIR, "rdo_reward_diff")
    assert (r["responses"], r["scores"]) == (["bad", "good"], [0.0, 1.0])
    assert r["rdo_reward_diff"] == [[0.0, 2.5], [-2.5, 0.0]]  # [0][1]: "good (1) beats bad (0)" by R
    assert (r["rdo_row"], r["id"]) == (4, "x") and "chosen" not in r
    assert "rdo_reward_diff" in pair_to_ranked(PAIR, None)  # untouched pass-through column, not a matrix
    assert pair_to_ranked(PAIR, None)["rdo_reward_diff"] == 2.5


def test_pair_to_unpaired_keeps_row_and_coefficient():
    d, u = pair_to_unpaired(PAIR)
    assert (d["completion"], d["label"], d["rdo_example"]) == ("good", True, 0)
    assert (u["completion"], u["label"], u["rdo_example"]) == ("bad", False, 1)
    assert d["rdo_row"] == u["rdo_row"] == 4
    assert d["rdo_reward_diff"] == u["rdo_reward_diff"] == 2.5
    assert len(convert_records([PAIR, {**PAIR, "rdo_row": 5}], "pair", "unpaired")) == 4
    with pytest.raises(ValueError, match="cannot convert ranked"):
        convert_records([PAIR], "ranked", "pair")


def _unpaired_features(rows: int, per_row: int) -> list[dict]:
    return [
        {"rdo_row": r, "rdo_example": e, "prompt_ids": [1, r], "completion_ids": [100 * r + e, 2], "length": 4}
        for r in range(1, rows + 1) for e in range(per_row)
    ]


@pytest.mark.parametrize("per_row", [1, 2])
def test_kl_completions_come_from_other_rows_once_each(per_row):
    features = _unpaired_features(7, per_row)
    out = assign_kl_completions(features, seed=0)
    owner = {tuple(f["completion_ids"]): (f["rdo_row"], f["rdo_example"]) for f in features}
    donors = [owner[tuple(f["kl_completion_ids"])] for f in out]
    assert all(d[0] != f["rdo_row"] for d, f in zip(donors, out))  # always another row's completion
    assert all(d[1] == f["rdo_example"] for d, f in zip(donors, out))  # chosen from chosen, rejected from rejected
    assert sorted(donors) == sorted(owner.values())  # each completion is some example's y' exactly once
    assert assign_kl_completions(features, seed=0) == out  # deterministic, so precomputable
    assert assign_kl_completions(features, seed=1) != out
    assert all(f["length"] == 4 for f in out)


def test_kl_completions_need_two_rows():
    with pytest.raises(ValueError, match="at least 2 rows"):
        assign_kl_completions(_unpaired_features(1, 2), seed=0)


# ---------------------------------------------------------------------------------------------
# Ranked coefficients: the K x K matrix column, and its weights
# ---------------------------------------------------------------------------------------------

RANKED = {"prompt": "q", "responses": ["a", "b", "c"], "scores": [1.0, 3.0, 2.0]}


def test_ranked_coefficient_matrix_accepted(tmp_path, tokenizer):
    m = [[0, 2.0, 1.0], [-2.0, 0, -1.0], [-1.0, 1.0, 0]]
    path = write_jsonl(tmp_path / "r.jsonl", [{**RANKED, "rdo_reward_diff": m}, dict(RANKED)])  # 2nd: from scores
    loaded = load_records(str(path), tokenizer=tokenizer, coef_column="rdo_reward_diff")
    assert loaded.records[0]["rdo_reward_diff"] == m
    assert "rdo_reward_diff" not in loaded.records[1]


@pytest.mark.parametrize("value,problem", [
    ([1.0, 2.0, 3.0], "3 x 3 list of lists"),
    ([[0, 1], [1, 0]], "3 x 3 list of lists"),
    ([[0, 1, 2], [1, 0], [2, 1, 0]], "3 x 3 list of lists"),
    (2.0, "3 x 3 list of lists"),
    ([[0, 1, 2], [1, 0, "x"], [2, 1, 0]], "expected a number"),
    ([[0, 1, 2], [1, 0, float("nan")], [2, 1, 0]], "coefficient is nan"),
])
def test_ranked_coefficient_matrix_invalid(tmp_path, tokenizer, value, problem):
    path = write_jsonl(tmp_path / "r.jsonl", [dict(RANKED), {**RANKED, "rdo_reward_diff": value}])
    with pytest.raises(DataError, match=problem) as err:
        load_records(str(path), tokenizer=tokenizer, coef_column="rdo_reward_diff")
    assert (err.value.source, err.value.row, err.value.field) == (str(path), 2, "rdo_reward_diff")
    skipped = load_records(str(path), tokenizer=tokenizer, coef_column="rdo_reward_diff", skip_invalid=True)
    assert len(skipped.records) == 1 and skipped.skips.total == 1


def test_pair_coefficient_must_be_a_number(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b", "rdo_reward_diff": [1.0]}])
    with pytest.raises(DataError, match="expected a number"):
        load_records(str(path), tokenizer=tokenizer, coef_column="rdo_reward_diff")


def test_ranked_weights_from_scores_hand_computed():
    # scores [1, 3, 2]: used pairs (i worse, j better) (0,1) R=2, (0,2) R=1, (2,1) R=1.
    # alpha = 1, normalize none: weights = R.  normalize mean: mean R = 4/3 -> 1.5, 0.75, 0.75.
    w, keep, stats = ranked_weights(CoefficientPolicy(1.0, normalize="none"), [[1.0, 3.0, 2.0]], [None])
    assert w == [[[0, 2.0, 1.0], [0, 0, 0], [0, 1.0, 0]]]
    assert keep == [True] and stats["n"] == 3
    w, _, _ = ranked_weights(CoefficientPolicy(1.0, normalize="mean"), [[1.0, 3.0, 2.0]], [None])
    assert w[0][0][1] == pytest.approx(1.5) and w[0][0][2] == pytest.approx(0.75) and w[0][2][1] == pytest.approx(0.75)


def test_ranked_weights_from_matrix_over_the_dataset():
    # Row 0: K=2 pair with R = 4 at [0][1]; row 1: K=3, scores [5, 1, 3], so used pairs are
    # (1,0), (1,2), (2,0); its matrix gives R = 1, 0.25, -1 (the scorer disagrees on (2,0)).
    # alpha = 0.5, clip at floor 0.01, normalize none: 2, 1, 0.5, 0.1.
    m1 = [[0, 9, 9], [1.0, 0, 0.25], [-1.0, 9, 0]]  # 9s sit on unused pairs and must be ignored
    w, keep, stats = ranked_weights(
        CoefficientPolicy(0.5, normalize="none"), [[0.0, 1.0], [5.0, 1.0, 3.0]], [[[0, 4.0], [-4.0, 0]], m1]
    )
    assert w[0] == [[0, pytest.approx(2.0)], [0, 0]]
    assert w[1] == [[0, 0, 0], [pytest.approx(1.0), 0, pytest.approx(0.5)], [pytest.approx(0.1), 0, 0]]
    assert stats["n"] == 4 and stats["frac_nonpositive"] == 0.25
    # drop: row 0 keeps its only pair; a row whose pairs are all dropped is removed
    w, keep, _ = ranked_weights(CoefficientPolicy(0.5, "drop"), [[0.0, 1.0], [0.0, 1.0]], [[[0, 4.0], [0, 0]], [[0, -1.0], [0, 0]]])
    assert keep == [True, False] and w[1] == [[0, 0], [0, 0]]


def test_ranked_alpha_zero_weights_are_one():
    w, keep, _ = ranked_weights(CoefficientPolicy(0.0), [[1.0, 3.0, 2.0]], [[[0, -5, 7], [0, 0, 0], [0, 0.1, 0]]])
    assert w == [[[0, 1.0, 1.0], [0, 0, 0], [0, 1.0, 0]]]


# ---------------------------------------------------------------------------------------------
# Reference cache: two KTO examples of one pair share rdo_row, so the key includes rdo_example
# ---------------------------------------------------------------------------------------------


def test_reference_cache_keys_examples_of_one_row(tmp_path):
    features = _unpaired_features(3, 2)
    calls = []

    def ref_step(model, batch):
        calls.append(1)
        return {"ref_logps": batch["value"]}

    def collator(fs):
        return {"value": torch.tensor([float(f["completion_ids"][0]) for f in fs])}

    key, about = {"reference": "r"}, {"data": "d"}
    first, path = load_or_compute(tmp_path, key, about, lambda: torch.nn.Identity(), features, collator, ref_step, 2, "cpu")
    assert first["ref_logps"] == [float(f["completion_ids"][0]) for f in features]
    n_calls = len(calls)
    shuffled = features[::-1]
    again, again_path = load_or_compute(tmp_path, key, about, lambda: torch.nn.Identity(), shuffled, collator, ref_step, 2, "cpu")
    assert again_path == path
    assert len(calls) == n_calls  # read from the cache, not recomputed
    assert again["ref_logps"] == [float(f["completion_ids"][0]) for f in shuffled]
