"""`rdo score`: output columns, symmetrisation, ranked rows, resume after a kill, the CLI surface (cross-fitting: test_crossfit)."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import write_jsonl
from rdo.cli import main
from rdo.config import ScoreConfig
from rdo.score.scorers import load_scorer
from rdo.score.scoring import rank_by, score
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


def test_score_pairs_with_difference_model(scorers, tmp_path, capsys):
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
    printed = capsys.readouterr().out
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
    # the run prints them, not only the summary file: the values counted here from the direct scores
    assert f"position consistency            {consistent / 12:.4f}" in printed
    assert f"mean |f(x,y,y)|                 {sum(abs(d[2]) for d in direct[:5]) / 5:.4f}  (over 5 rows)" in printed
    assert "rows read / written / dropped   12 / 12 / 0" in printed


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


def alone(scorer, prompt: str, response: str) -> float:
    """A reward model's score of one (prompt, response), in a batch of one: BOS + prompt + response + EOS."""
    ids = lambda t: scorer.tok(t, add_special_tokens=False)["input_ids"]  # noqa: E731
    return scorer.forward([[1] + ids(prompt) + ids(response) + [2]]).item()


def test_score_ranked_rows(scorers, tmp_path):
    inputs = ranked_rows(10, seed=5)
    data = write_jsonl(tmp_path / "ranked.jsonl", inputs)
    rm_out, diff_out, rerank_out = tmp_path / "rm.jsonl", tmp_path / "diff.jsonl", tmp_path / "rerank.jsonl"
    assert main(["score", "--scorer", str(scorers["rm"]), "--dataset_name", str(data), "--output", str(rm_out)]) == 0
    assert main(["score", "--scorer", str(scorers["rm"]), "--dataset_name", str(data), "--output", str(rerank_out),
                 "--rank_with", "reward"]) == 0
    rm = load_scorer(str(scorers["rm"]), device="cpu")
    for row, rerank, inp in zip(read_jsonl(rm_out), read_jsonl(rerank_out), inputs):
        direct = [alone(rm, inp["query"], y) for y in inp["responses"]]
        assert row["rdo_scores"] == pytest.approx(direct, abs=1e-5)  # each response scored on its own
        R = row["rdo_reward_diff"]
        assert all(R[i][j] == pytest.approx(direct[j] - direct[i], abs=1e-5) for i in range(3) for j in range(3))
        # --rank_with reward: the responses ranked by their own scores (0 = worst), the data's kept aside
        assert rerank["scores"] == [float(sorted(direct).index(v)) for v in direct]
        assert rerank["scores_original"] == inp["scores"] and rerank["rdo_scores"] == pytest.approx(direct, abs=1e-5)

    assert main(["score", "--scorer", str(scorers["diff"]), "--dataset_name", str(data), "--output", str(diff_out),
                 "--rank-with", "difference"]) == 0
    rows = read_jsonl(diff_out)
    diff = load_scorer(str(scorers["diff"]), device="cpu")
    agree = 0
    for row, inp in zip(rows, inputs):
        R = row["rdo_reward_diff"]
        x, ys = (diff.tok(t, add_special_tokens=False)["input_ids"] for t in (inp["query"], inp["responses"]))
        f = {(a, b): diff.forward([diff.diff_encoder.assemble(x, ys[a], ys[b])]).item() for a in range(3) for b in range(3) if a != b}
        # R[i][j] = how much j beats i = (f(x, y_j, y_i) - f(x, y_i, y_j)) / 2, from each comparison scored alone
        assert all(R[i][j] == pytest.approx((f[j, i] - f[i, j]) / 2, abs=1e-5) for i in range(3) for j in range(3) if i != j)
        assert all(R[i][i] == 0 for i in range(3))
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


def kill(name):
    raise Killed


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
    assert not out.exists() and sorted(p.stem for p in shards.glob("*.jsonl")) == sorted(written)
    (shards / "chunk-half.jsonl.tmp-1").write_text('{"half": "written')  # a kill mid-write leaves only a tmp name

    with pytest.raises(ValueError, match="different run"):  # changed settings must not mix with old shards
        score(ScoreConfig(output=str(out), **{**kw, "symmetrize": False}))

    resumed: list[str] = []
    summary = score(ScoreConfig(output=str(out), **kw), on_shard=resumed.append)
    assert len(resumed) == 2 and not set(resumed) & set(written)  # only the rows of the missing shards are scored
    assert out.read_bytes() == whole.read_bytes()  # exactly the rows of the uninterrupted run
    assert summary["rows_written"] == 20 and summary["dup_checked_rows"] == 7
    assert not shards.exists()


def test_batches_cap_sequences_and_padded_tokens():
    from rdo.score.scoring import batches

    lengths = [100, 90, 50, 40, 30, 10, 10]  # sorted longest first
    assert [list(r) for r in batches(lengths, 3)] == [[0, 1, 2], [3, 4, 5], [6]]
    # at most 120 padded tokens: 100 alone, 90 alone, 50 + 40 (2 x 50), then 30 + 10 + 10 (3 x 30; batch_size caps it)
    assert [list(r) for r in batches(lengths, 3, max_tokens=120)] == [[0], [1], [2, 3], [4, 5, 6]]


def test_resume_accepts_smaller_batches_and_refuses_changed_data(scorers, tmp_path):
    """After an out-of-memory a user lowers --batch_size / --max_batch_tokens (or --shard_size): the run continues."""
    rows = learnable_pairs(20, seed=6)
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    kw = dict(scorer=str(scorers["diff"]), dataset_name=str(data), dup_check_rows=7)
    whole = tmp_path / "whole.jsonl"
    score(ScoreConfig(output=str(whole), shard_size=6, batch_size=8, **kw))
    out = tmp_path / "out.jsonl"
    with pytest.raises(Killed):
        score(ScoreConfig(output=str(out), shard_size=6, batch_size=8, **kw), on_shard=kill)
    first = read_jsonl(next((tmp_path / "out.jsonl.shards").glob("chunk-*.jsonl")))
    assert len(first) == 6

    import os

    os.utime(data, ns=(1, 1))  # the same bytes with another mtime: not a different dataset
    resumed: list[str] = []
    summary = score(ScoreConfig(output=str(out), shard_size=4, batch_size=2, max_batch_tokens=64, **kw), on_shard=resumed.append)
    assert len(resumed) == 4  # the 14 unscored rows in shards of 4; the 6 scored rows are not redone
    assert summary["rows_written"] == 20 and summary["dup_checked_rows"] == 7
    for a, b in zip(read_jsonl(out), read_jsonl(whole)):
        assert a["rdo_reward_diff"] == pytest.approx(b["rdo_reward_diff"], abs=1e-5)

    with pytest.raises(Killed):
        score(ScoreConfig(output=str(out), shard_size=6, **kw), on_shard=kill)
    write_jsonl(data, [dict(rows[0], chosen=" dcba"), *rows[1:]])  # an edit at the same path
    with pytest.raises(ValueError, match=r"different run \(changed: \['data'\]\)"):
        score(ScoreConfig(output=str(out), shard_size=6, **kw))


def test_progress_bar_counts_the_duplicate_checks(scorers, tmp_path, monkeypatch):
    import rdo.score.scoring

    bars = []

    class Recorder:
        def __init__(self, total, **kw):
            self.total, self.n = total, 0
            bars.append(self)

        def update(self, n):
            self.n += n

        def set_postfix(self, **kw):
            pass

        def close(self):
            pass

    monkeypatch.setattr(rdo.score.scoring, "tqdm", Recorder)
    data = write_jsonl(tmp_path / "pairs.jsonl", learnable_pairs(6, seed=3))
    score(ScoreConfig(scorer=str(scorers["diff"]), dataset_name=str(data), output=str(tmp_path / "o.jsonl"), dup_check_rows=4))
    assert [(b.total, b.n) for b in bars] == [(6 * 2 + 4, 6 * 2 + 4)]  # both orders of 6 pairs + 4 f(x, y, y)


def test_overwrite_keep_shards_and_parquet_through_the_cli(scorers, tmp_path, capsys):
    import pandas as pd

    data = write_jsonl(tmp_path / "pairs.jsonl", learnable_pairs(8, seed=4))
    base = ["score", "--scorer", str(scorers["diff"]), "--dataset_name", str(data), "--shard_size", "3"]
    out = tmp_path / "out.parquet"
    with pytest.raises(Killed):  # leave shards of a symmetrised run behind
        score(ScoreConfig(scorer=str(scorers["diff"]), dataset_name=str(data), output=str(out), shard_size=3),
              on_shard=kill)
    capsys.readouterr()
    assert main([*base, "--output", str(out), "--no-symmetrize"]) == 2  # other values: refuse to mix
    err = capsys.readouterr().err
    assert "different run (changed: ['symmetrize'])" in err and "--overwrite" in err and "Traceback" not in err
    assert main([*base, "--output", str(out), "--no-symmetrize", "--overwrite", "--keep_shards"]) == 0
    assert main([*base, "--output", str(tmp_path / "ref.jsonl"), "--no-symmetrize"]) == 0
    table, ref = pd.read_parquet(out).to_dict("records"), read_jsonl(tmp_path / "ref.jsonl")
    assert [r["id"] for r in table] == [r["id"] for r in ref]
    assert [r["rdo_reward_diff"] for r in table] == pytest.approx([r["rdo_reward_diff"] for r in ref], abs=1e-6)
    # --keep_shards: the shards stay, hold every row once (the killed run's symmetrised shard was discarded)
    shards = tmp_path / "out.parquet.shards"
    entries = [json.loads(line) for p in shards.glob("*.jsonl") for line in p.read_text().splitlines()]
    assert sorted(e["rdo_row"] for e in entries) == list(range(1, 9))
    by_row = {e["rdo_row"]: e["cols"]["rdo_reward_diff"] for e in entries}
    assert [by_row[i + 1] for i in range(8)] == pytest.approx([r["rdo_reward_diff"] for r in ref], abs=1e-6)
    assert json.loads((shards / "manifest.json").read_text())["symmetrize"] is False
    assert not (tmp_path / "ref.jsonl.shards").exists()  # without --keep_shards they go


def test_a_prompt_too_long_for_a_reward_model_is_cut_not_dropped(scorers, tmp_path, capsys):
    scorer = tmp_path / "rm"
    shutil.copytree(scorers["rm"], scorer)
    spec = json.loads((scorer / "rdo.json").read_text())
    (scorer / "rdo.json").write_text(json.dumps({**spec, "max_length": 64, "max_prompt_length": None}))
    rows = learnable_pairs(4, seed=8)
    rows[1]["prompt"] = "q" * 100  # 100 tokens: no room for a response within 64
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "out.jsonl"
    assert main(["score", "--scorer", str(scorer), "--dataset_name", str(data), "--output", str(out)]) == 0
    assert [r["id"] for r in read_jsonl(out)] == [r["id"] for r in rows]  # every input row
    assert "rows read / written / dropped   4 / 4 / 0" in capsys.readouterr().out
    # the long prompt keeps BOS and its last 61 tokens (62 in all = max_length - 2), each response 1 token + EOS
    rm = load_scorer(str(scorer), device="cpu")
    ids = lambda t: rm.tok(t, add_special_tokens=False)["input_ids"]  # noqa: E731
    row = read_jsonl(out)[1]
    for col, resp in (("rdo_score_chosen", rows[1]["chosen"]), ("rdo_score_rejected", rows[1]["rejected"])):
        assert row[col] == pytest.approx(rm.forward([[1] + ids(rows[1]["prompt"])[-61:] + ids(resp)[:1] + [2]]).item(), abs=1e-5)
    assert json.loads((tmp_path / "out.summary.json").read_text())["rows_dropped"] == 0
