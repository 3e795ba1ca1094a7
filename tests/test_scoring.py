"""`rdo score`: output columns, symmetrisation, ranked rows, resume after a kill, cross-fitting."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import write_jsonl
from rdo.cli import main
from rdo.config import ScoreConfig
from rdo.scorers import load_scorer
from rdo.scoring import assign_folds, rank_by, score
from scorer_helpers import learnable_pairs, ranked_rows


@pytest.fixture(scope="session")
def scorers(trained_scorers):
    return trained_scorers


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def direct_scores(folder, seqs_fn, rows):
    """Score each row on its own (batch of 1), independently of rdo score's batching."""
    scorer = load_scorer(str(folder), device="cpu")
    tok = scorer.tok
    out = []
    for r in rows:
        ids = {k: tok(r[k], add_special_tokens=False)["input_ids"] for k in ("prompt", "chosen", "rejected")}
        out.append([scorer.forward([s]).item() for s in seqs_fn(scorer, ids)])
    return out


def test_score_pairs_with_reward_model(scorers, tmp_path):
    out = tmp_path / "scored.jsonl"
    assert main(["score", "--scorer", str(scorers["rm"]), "--dataset_name", str(scorers["test"]), "--output", str(out),
                 "--batch_size", "5"]) == 0
    inputs, rows = read_jsonl(scorers["test"]), read_jsonl(out)
    assert len(rows) == len(inputs)
    for inp, row in zip(inputs, rows):
        assert {k: row[k] for k in inp} == inp  # every input column unchanged, in input order
        assert set(row) - set(inp) == {"rdo_reward_diff", "rdo_score_chosen", "rdo_score_rejected"}
        assert row["rdo_reward_diff"] == pytest.approx(row["rdo_score_chosen"] - row["rdo_score_rejected"])

    def seqs(scorer, ids):  # BOS + prompt + response + EOS
        return [[1] + ids["prompt"] + ids[k] + [2] for k in ("chosen", "rejected")]

    for (chosen, rejected), row in zip(direct_scores(scorers["rm"], seqs, inputs[:4]), rows):
        assert row["rdo_score_chosen"] == pytest.approx(chosen, abs=1e-5)
        assert row["rdo_score_rejected"] == pytest.approx(rejected, abs=1e-5)
    summary = json.loads((tmp_path / "scored.summary.json").read_text())
    assert summary["rows_written"] == 32 and summary["kind"] == "reward" and summary["frac_agree_with_labels"] >= 0.8

    # the output is what `rdo align` reads: the data layer accepts it with the coefficient column required
    from rdo.data import load_records

    loaded = load_records(str(out), coef_column="rdo_reward_diff")
    assert [r["rdo_reward_diff"] for r in loaded.records] == [r["rdo_reward_diff"] for r in rows]


def test_score_pairs_with_difference_model(scorers, tmp_path):
    inputs = read_jsonl(scorers["test"])[:12]
    data = write_jsonl(tmp_path / "pairs.jsonl", inputs)

    def seqs(scorer, ids):  # f(x, y_w, y_l), f(x, y_l, y_w), f(x, y_w, y_w)
        enc = scorer.diff_encoder
        x, w, l = ids["prompt"], ids["chosen"], ids["rejected"]
        return [enc.assemble(x, w, l), enc.assemble(x, l, w), enc.assemble(x, w, w)]

    direct = direct_scores(scorers["diff"], seqs, inputs)
    sym, single = tmp_path / "sym.jsonl", tmp_path / "single.jsonl"
    assert main(["score", "--scorer", str(scorers["diff"]), "--dataset_name", str(data), "--output", str(sym),
                 "--dup_check_rows", "5"]) == 0
    assert main(["score", "--scorer", str(scorers["diff"]), "--dataset_name", str(data), "--output", str(single),
                 "--no-symmetrize"]) == 0
    for (f_wl, f_lw, _), s, p in zip(direct, read_jsonl(sym), read_jsonl(single)):
        assert set(s) - set(inputs[0]) == {"rdo_reward_diff"}
        assert s["rdo_reward_diff"] == pytest.approx((f_wl - f_lw) / 2, abs=1e-5)  # antisymmetrised
        assert p["rdo_reward_diff"] == pytest.approx(f_wl, abs=1e-5)  # the paper's single pass
    summary = json.loads((tmp_path / "sym.summary.json").read_text())
    consistent = sum((f_wl > 0) != (f_lw > 0) for f_wl, f_lw, _ in direct)
    assert summary["position_consistency"] == pytest.approx(consistent / 12)
    assert summary["dup_checked_rows"] == 5
    assert summary["mean_abs_f_dup"] == pytest.approx(sum(abs(d[2]) for d in direct[:5]) / 5, abs=1e-5)


def test_rank_by_wins_then_summed_r():
    # R[i][j] = how much response j beats response i.
    # 0 beats 1 and 2, 2 beats 1: wins (2, 0, 1)
    R = [[0.0, -1.0, -2.0],
         [1.0, 0.0, 0.5],
         [2.0, -0.5, 0.0]]
    assert rank_by(R) == [2.0, 0.0, 1.0]
    # a cycle (0 > 1 > 2 > 0): one win each, so the summed R of each column decides: -1, -0.5, 1.5
    R = [[0.0, -1.0, 2.0],
         [1.0, 0.0, -0.5],
         [-2.0, 0.5, 0.0]]
    assert rank_by(R) == [0.0, 1.0, 2.0]
    assert rank_by([[0.0, 0.0], [0.0, 0.0]]) == [0.0, 0.0]  # a true tie stays a tie


def test_score_ranked_rows(scorers, tmp_path):
    data = write_jsonl(tmp_path / "ranked.jsonl", ranked_rows(10, seed=5))
    rm_out, diff_out = tmp_path / "rm.jsonl", tmp_path / "diff.jsonl"
    assert main(["score", "--scorer", str(scorers["rm"]), "--dataset_name", str(data), "--output", str(rm_out)]) == 0
    for row in read_jsonl(rm_out):
        s, R = row["rdo_scores"], row["rdo_reward_diff"]
        assert len(s) == 3 and len(R) == 3
        for i in range(3):
            for j in range(3):
                assert R[i][j] == pytest.approx(s[j] - s[i])  # [i][j]: response j beats response i

    assert main(["score", "--scorer", str(scorers["diff"]), "--dataset_name", str(data), "--output", str(diff_out),
                 "--rank-with", "difference"]) == 0
    rows = read_jsonl(diff_out)
    agree = 0
    for row, inp in zip(rows, ranked_rows(10, seed=5)):
        R = row["rdo_reward_diff"]
        assert all(R[i][i] == 0 for i in range(3))
        assert all(R[i][j] == pytest.approx(-R[j][i]) for i in range(3) for j in range(3))
        assert row["scores_original"] == inp["scores"] and row["query"] == inp["query"]
        assert row["scores"] == rank_by(R)
        agree += row["scores"].index(max(row["scores"])) == inp["scores"].index(2.0)
    assert agree >= 8  # the difference model's favourite is usually the all-good response

    from rdo.data import load_records  # `rdo align --method rrhf` reads the K x K column as is

    loaded = load_records(str(diff_out), coef_column="rdo_reward_diff")
    assert loaded.kind == "ranked" and loaded.records[0]["rdo_reward_diff"] == rows[0]["rdo_reward_diff"]

    with pytest.raises(ValueError, match="needs a difference model"):
        score(ScoreConfig(scorer=str(scorers["rm"]), dataset_name=str(data), output=str(tmp_path / "x.jsonl"), rank_with="difference"))


class Killed(Exception):
    pass


def test_killed_score_resumes_to_the_uninterrupted_rows(scorers, tmp_path):
    data = write_jsonl(tmp_path / "pairs.jsonl", learnable_pairs(20, seed=6))
    kw = dict(scorer=str(scorers["diff"]), dataset_name=str(data), shard_size=6, batch_size=4, dup_check_rows=7)
    whole = tmp_path / "whole.jsonl"
    score(ScoreConfig(output=str(whole), **kw))

    out = tmp_path / "resumed.jsonl"
    written: list[str] = []

    def kill_after_two(name):
        written.append(name)
        if len(written) == 2:
            raise Killed

    with pytest.raises(Killed):
        score(ScoreConfig(output=str(out), **kw), on_shard=kill_after_two)
    shards = tmp_path / "resumed.jsonl.shards"
    assert not out.exists() and sorted(p.name for p in shards.glob("*.jsonl")) == ["chunk-00000.jsonl", "chunk-00001.jsonl"]
    (shards / "chunk-00002.jsonl.tmp").write_text('{"half": "written')  # a kill mid-write leaves only a .tmp

    with pytest.raises(ValueError, match="different run"):  # changed settings must not mix with old shards
        score(ScoreConfig(output=str(out), **{**kw, "symmetrize": False}))

    resumed: list[str] = []
    summary = score(ScoreConfig(output=str(out), **kw), on_shard=resumed.append)
    assert resumed == ["chunk-00002", "chunk-00003"]  # only the missing shards are scored
    assert out.read_bytes() == whole.read_bytes()  # exactly the rows of the uninterrupted run
    assert summary["rows_written"] == 20 and summary["dup_checked_rows"] == 7
    assert not shards.exists()


def test_assign_folds_groups_prompts_and_balances():
    recs = [{"rdo_row": i, "prompt": f"p{(i - 1) // 2}"} for i in range(1, 21)]  # 10 prompts, 2 rows each
    folds = assign_folds(recs, 3, seed=0)
    assert folds == assign_folds(recs, 3, seed=0)
    for i in range(1, 21, 2):
        assert folds[i] == folds[i + 1]  # one prompt, one fold
    sizes = [sum(f == k for f in folds.values()) for k in range(3)]
    assert sorted(sizes) == [6, 6, 8]
    with pytest.raises(ValueError, match="distinct prompt"):
        assign_folds(recs[:2], 3, seed=0)


def test_cross_fitting_scores_each_fold_with_the_model_that_never_saw_it(scorers, tmp_path):
    # the recipe of a scorer is its rdo_config.json; make it cheap (2 steps) for the test
    recipe_scorer = tmp_path / "rm"
    shutil.copytree(scorers["rm"], recipe_scorer)
    cfg = json.loads((recipe_scorer / "rdo_config.json").read_text())
    (recipe_scorer / "rdo_config.json").write_text(json.dumps({**cfg, "max_steps": 2}))

    rows = learnable_pairs(12, seed=7)
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "cf.jsonl"
    assert main(["score", "--scorer", str(recipe_scorer), "--dataset_name", str(data), "--output", str(out), "--folds", "2"]) == 0
    scored = read_jsonl(out)
    assert [r["id"] for r in scored] == [r["id"] for r in rows]
    assert {r["rdo_fold"] for r in scored} == {0, 1}
    for k in (0, 1):
        fold_dir = tmp_path / "cf.jsonl.folds" / f"fold-{k}"
        trained_on = {r["id"] for r in read_jsonl(tmp_path / "cf.jsonl.folds" / f"fold-{k}-train.jsonl")}
        held_out = [r for r in scored if r["rdo_fold"] == k]
        assert trained_on == {r["id"] for r in scored if r["rdo_fold"] != k}  # never trained on its own fold
        # each held-out row's R comes from this fold's model
        single = tmp_path / f"check{k}.jsonl"
        write_jsonl(tmp_path / f"held{k}.jsonl", [{c: r[c] for c in ("id", "prompt", "chosen", "rejected")} for r in held_out])
        score(ScoreConfig(scorer=str(fold_dir), dataset_name=str(tmp_path / f"held{k}.jsonl"), output=str(single)))
        for a, b in zip(held_out, read_jsonl(single)):
            assert a["rdo_reward_diff"] == pytest.approx(b["rdo_reward_diff"], abs=1e-5)
    summary = json.loads((tmp_path / "cf.summary.json").read_text())
    assert summary["folds"] == 2 and summary["rows_written"] == 12


def test_batches_cap_sequences_and_padded_tokens():
    from rdo.scoring import batches

    lengths = [100, 90, 50, 40, 30, 10, 10]  # sorted longest first
    assert [list(r) for r in batches(lengths, 3)] == [[0, 1, 2], [3, 4, 5], [6]]
    # at most 120 padded tokens: 100 alone, 90 alone, 50 + 40 (2 x 50), then 30 + 10 + 10 (3 x 30; batch_size caps it)
    assert [list(r) for r in batches(lengths, 3, max_tokens=120)] == [[0], [1], [2, 3], [4, 5, 6]]
