"""Where R comes from and where the weight goes: `rdo align --score_chosen_column/--score_rejected_column`
(R from the data's own two scores, pairs) and `rdo score --weight_column` (the final weight, for training elsewhere)."""

from __future__ import annotations

import json

import pytest

from conftest import run_align, step_logs, synthetic_pairs, write_jsonl
from rdo.cli import main
from rdo.data import DataError, load_records
from scorer_helpers import ranked_rows


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _with_scores(rows):
    """UltraFeedback-style rows: the judge's two scores, no R column; R = score_chosen - score_rejected."""
    out = []
    for i, r in enumerate(rows):
        r = {k: v for k, v in r.items() if k != "rdo_reward_diff"}
        out.append(dict(r, score_chosen=float(3 + i % 4), score_rejected=float(2 + (i * 3) % 5) / 2))
    return out


# --- R from two score columns -----------------------------------------------------------------------

def test_two_score_columns_fill_r(tmp_path):
    rows = _with_scores(synthetic_pairs(6))
    data = write_jsonl(tmp_path / "uf.jsonl", rows)
    loaded = load_records(str(data), coef_column="rdo_reward_diff", score_columns=("score_chosen", "score_rejected"))
    assert [r["rdo_reward_diff"] for r in loaded.records] == [r["score_chosen"] - r["score_rejected"] for r in rows]
    assert [r["rdo_reward_diff"] for r in loaded.records][:3] == [2.0, 1.5, 3.5]  # 3 - 1, 4 - 2.5, 5 - 1.5


@pytest.mark.parametrize("change,field,problem", [
    (lambda r: r.pop("score_rejected"), "score_rejected", "missing score"),
    (lambda r: r.update(score_chosen="7"), "score_chosen", "expected a finite number, got '7'"),
    (lambda r: r.update(score_chosen=float("nan")), "score_chosen", "expected a finite number, got nan"),
    (lambda r: r.update(rdo_reward_diff=1.0), "rdo_reward_diff", "R must come from one source"),
])
def test_bad_scores_name_file_row_and_field(tmp_path, change, field, problem):
    rows = _with_scores(synthetic_pairs(4))
    change(rows[2])
    data = tmp_path / "uf.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))  # json writes nan as NaN, which the reader accepts
    with pytest.raises(DataError) as err:
        load_records(str(data), coef_column="rdo_reward_diff", score_columns=("score_chosen", "score_rejected"))
    assert err.value.row == 3 and err.value.field == field and problem in str(err.value)
    assert str(data) in str(err.value)
    if problem == "missing score":  # --skip_invalid counts it instead
        loaded = load_records(str(data), coef_column="rdo_reward_diff", score_columns=("score_chosen", "score_rejected"),
                              skip_invalid=True)
        assert len(loaded.records) == 3 and loaded.skips.counts == {"score_rejected: missing score": 1}


def test_ranked_rows_refuse_score_columns(tmp_path):
    data = write_jsonl(tmp_path / "ranked.jsonl", ranked_rows(2, seed=0))
    with pytest.raises(ValueError, match="ranked rows are not pairs.*take R from their own `scores`"):
        load_records(str(data), coef_column="rdo_reward_diff", score_columns=("a", "b"))


def test_align_from_score_columns_trains_like_the_precomputed_column(tiny_model, tmp_path):
    rows = _with_scores(synthetic_pairs(16))
    uf = write_jsonl(tmp_path / "uf.jsonl", rows)
    by_hand = write_jsonl(tmp_path / "hand.jsonl", [dict(r, rdo_reward_diff=r["score_chosen"] - r["score_rejected"]) for r in rows])
    flags = ("--num_train_epochs", "1", "--alpha", "1", "--mmpo_gamma", "0.5")
    cols = ("--score_chosen_column", "score_chosen", "--score_rejected_column", "score_rejected")
    a = run_align(tiny_model, uf, tmp_path / "a", "mmpo", *flags, *cols)
    b = run_align(tiny_model, by_hand, tmp_path / "b", "mmpo", *flags)
    assert [e["loss"] for e in step_logs(a)] == [e["loss"] for e in step_logs(b)]
    assert [e["mmpo/label"] for e in step_logs(a)] == [e["mmpo/label"] for e in step_logs(b)]
    assert a["data"]["reward_diff_source"] == "score_chosen - score_rejected"
    assert a["data"]["coefficients"]["reward_diff"] == b["data"]["coefficients"]["reward_diff"]


@pytest.mark.parametrize("flags,message", [
    (["--score_chosen_column", "a"], "set both --score_chosen_column and --score_rejected_column"),
    (["--score_chosen_column", "a", "--score_rejected_column", "a"], "both name 'a'"),
    (["--score_chosen_column", "a", "--score_rejected_column", "b", "--alpha", "0"], "--method dpo at --alpha 0 does not use"),
])
def test_score_column_options_are_checked(tmp_path, capsys, flags, message):
    code = main(["align", "--model_name_or_path", "m", "--dataset_name", "d.jsonl", "--output_dir", str(tmp_path), *flags])
    assert code == 2 and message in capsys.readouterr().err


# --- rdo score --weight_column ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def scorers(trained_scorers):
    return trained_scorers


def test_weight_column_is_the_weight_align_trains_with(scorers, tiny_model, tmp_path):
    rows = read_jsonl(scorers["test"])
    for row in rows[::5]:  # flipped labels: the scorer disagrees, R < 0, and the drop rule is exercised
        row["chosen"], row["rejected"] = row["rejected"], row["chosen"]
    data = write_jsonl(tmp_path / "flipped.jsonl", rows)
    out = tmp_path / "scored.jsonl"
    assert main(["score", "--scorer", str(scorers["rm"]), "--dataset_name", str(data), "--output", str(out),
                 "--weight_column", "w", "--alpha", "1", "--coef_nonpositive", "drop"]) == 0
    rows = read_jsonl(out)
    r = [row["rdo_reward_diff"] for row in rows]
    kept = [x for x in r if x > 0]
    assert 0 < len(kept) < len(r)
    mean = sum(kept) / len(kept)
    assert [row["w"] for row in rows] == pytest.approx([x / mean if x > 0 else 0.0 for x in r], rel=1e-6)  # R^1, mean 1
    summary = json.loads((tmp_path / "scored.summary.json").read_text())
    assert summary["weights"]["column"] == "w" and summary["weights"]["n_kept"] == len(kept)

    # `rdo align` on the scored file, with the same options, trains each kept row with exactly this weight
    from rdo.config import AlignConfig
    from rdo.core.methods import get_method
    from rdo.models import load_tokenizer
    from rdo.train.align import prepare_features

    cfg = AlignConfig(model_name_or_path=str(tiny_model), dataset_name=str(out), output_dir=str(tmp_path / "o"), use_cpu=True,
                      alpha=1.0, coef_nonpositive="drop", report_to="none")
    features, _ = prepare_features(cfg, get_method("dpo"), load_tokenizer(str(tiny_model)))
    assert len(features) == len(kept)
    for f in features:  # rdo_row is the JSONL line number: row n of the scored file
        assert f["rdo_weight"] == pytest.approx(rows[f["rdo_row"] - 1]["w"], rel=1e-6)


def test_weight_column_of_ranked_rows_is_one_weight_per_ranked_pair(scorers, tmp_path):
    data = write_jsonl(tmp_path / "ranked.jsonl", ranked_rows(6, seed=5))
    out = tmp_path / "scored.jsonl"
    assert main(["score", "--scorer", str(scorers["rm"]), "--dataset_name", str(data), "--output", str(out),
                 "--weight_column", "w", "--alpha", "0.5", "--coef_normalize", "none", "--coef_floor", "0.05"]) == 0
    for row in read_jsonl(out):
        s, R, w = row["scores"], row["rdo_reward_diff"], row["w"]
        for i in range(len(s)):
            for j in range(len(s)):
                expected = max(R[i][j], 0.05) ** 0.5 if s[i] < s[j] else 0.0  # only the pairs RRHF ranks (j better)
                assert w[i][j] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("flags,message", [
    (["--alpha", "1"], "--alpha set the weights that --weight_column writes"),
    (["--weight_column", "rdo_reward_diff"], "a column `rdo score` already writes"),
    (["--weight_column", "w", "--coef_floor", "0"], "floor=0.0 must be > 0"),
])
def test_weight_options_are_checked(tmp_path, capsys, flags, message):
    code = main(["score", "--scorer", "s", "--dataset_name", "d.jsonl", "--output", str(tmp_path / "o.jsonl"), *flags])
    assert code == 2 and message in capsys.readouterr().err
