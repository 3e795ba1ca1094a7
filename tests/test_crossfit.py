"""Cross-fitting: no row is ever scored by a model that trained on it — after another seed, an edited
dataset, or a run killed after its first fold — and fold models keep the recipe's epochs."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from conftest import write_jsonl
from rdo.cli import main
from rdo.config import ScoreConfig
from rdo.score.crossfit import assign_folds
from rdo.score.scoring import score
from scorer_helpers import learnable_pairs


@pytest.fixture(scope="session")
def scorers(trained_scorers):
    return trained_scorers


@pytest.fixture
def recipe_scorer(scorers, tmp_path):
    """The reward model with its recipe given in steps: the 16 steps it trained (64 rows, batch 8, 2 epochs)."""
    folder = tmp_path / "rm"
    shutil.copytree(scorers["rm"], folder)
    cfg = json.loads((folder / "rdo_config.json").read_text())
    assert json.loads((folder / "train_metrics.json").read_text())["train"]["epoch"] == 2.0
    (folder / "rdo_config.json").write_text(json.dumps({**cfg, "max_steps": 16}))
    return folder


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def content(row: dict) -> tuple:
    return row["prompt"], row["chosen"], row["rejected"]


def assert_out_of_sample(out, tmp_path) -> dict:
    """Every scored row: its fold's model never trained on it, trained on every other row, and gave its R."""
    scored = read_jsonl(out)
    manifest = json.loads(out.with_name(out.stem + ".folds.json").read_text())
    assert all("rdo_row" not in r for r in scored)  # no internal column leaks
    for m in manifest["models"]:
        k, model = m["fold"], m["model"]
        stored = json.loads((Path(model) / "rdo_fold.json").read_text())
        assert stored["key"] == m["key"]  # the model next to the scores is the one the manifest names
        train_file = json.loads((Path(model) / "rdo_config.json").read_text())["dataset_name"]
        trained_on = {content(r) for r in read_jsonl(Path(train_file))}
        held_out = [r for r in scored if r["rdo_fold"] == k]
        assert held_out and not trained_on & {content(r) for r in held_out}
        assert trained_on == {content(r) for r in scored if r["rdo_fold"] != k}
        # each held-out row's R is this fold model's
        write_jsonl(tmp_path / "held.jsonl", [{c: r[c] for c in ("id", "prompt", "chosen", "rejected")} for r in held_out])
        score(ScoreConfig(scorer=str(model), dataset_name=str(tmp_path / "held.jsonl"), output=str(tmp_path / "check.jsonl")))
        for a, b in zip(held_out, read_jsonl(tmp_path / "check.jsonl")):
            assert a["rdo_reward_diff"] == pytest.approx(b["rdo_reward_diff"], abs=1e-5)
    assert {r["rdo_fold"] for r in scored} == set(range(manifest["folds"]))
    return manifest


def crossfit_log(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "rdo.score.crossfit" and "fold " in r.getMessage()]


def test_assign_folds_groups_prompts_and_balances():
    recs = [{"rdo_row": i, "prompt": f"p{(i - 1) // 2}"} for i in range(1, 21)]  # 10 prompts, 2 rows each
    folds = assign_folds(recs, 3, seed=0)
    assert folds == assign_folds(recs, 3, seed=0)
    for i in range(1, 21, 2):
        assert folds[i] == folds[i + 1]  # one prompt, one fold
    sizes = [sum(f == k for f in folds.values()) for k in range(3)]
    assert sorted(sizes) == [6, 6, 8]
    assert folds != assign_folds(recs, 3, seed=1)
    with pytest.raises(ValueError, match="distinct prompt"):
        assign_folds(recs[:2], 3, seed=0)


def test_fold_models_keep_the_recipes_epochs(recipe_scorer, tmp_path):
    """A recipe of 16 steps was 2 epochs of the full scorer: each fold model trains 2 epochs, not 16 steps."""
    data = write_jsonl(tmp_path / "pairs.jsonl", learnable_pairs(12, seed=7))
    out = tmp_path / "cf.jsonl"
    assert main(["score", "--scorer", str(recipe_scorer), "--dataset_name", str(data), "--output", str(out), "--folds", "2"]) == 0
    manifest = assert_out_of_sample(out, tmp_path)
    for m in manifest["models"]:
        trained = json.loads((Path(m["model"]) / "train_metrics.json").read_text())
        assert trained["train"]["epoch"] == pytest.approx(2.0)
        # at most 8 rows at batch 8: one step per epoch (the old step budget trained 16)
        assert m["rows_trained"] == 12 - m["rows_scored"] <= 8 and trained["log_history"][-1]["step"] == 2
    summary = json.loads((tmp_path / "cf.summary.json").read_text())
    assert summary["folds"] == 2 and summary["rows_written"] == 12


def test_another_seed_or_an_edited_dataset_retrains_the_fold_models(recipe_scorer, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="rdo.score.crossfit")
    rows = learnable_pairs(12, seed=7)
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "cf.jsonl"
    argv = ["score", "--scorer", str(recipe_scorer), "--dataset_name", str(data), "--output", str(out), "--folds", "2"]
    assert main([*argv, "--seed", "0"]) == 0
    first = assert_out_of_sample(out, tmp_path)

    caplog.clear()
    assert main([*argv, "--seed", "1"]) == 0  # the same output path: fold models from seed 0 exist
    second = assert_out_of_sample(out, tmp_path)
    assert second["assignment"] != first["assignment"]
    assert [m["trained_this_run"] for m in second["models"]] == [True, True]
    assert sum("key changed: training rows" in m for m in crossfit_log(caplog)) == 2

    # edit one row in place: only the fold model that trained on it is retrained
    edited = dict(rows[0], chosen=" abcdabcd")
    write_jsonl(data, [edited, *rows[1:]])
    caplog.clear()
    assert main([*argv, "--seed", "1"]) == 0
    third = assert_out_of_sample(out, tmp_path)
    fold_of_edited = third["assignment"]["1"]
    assert third["assignment"] == second["assignment"]  # the split depends on prompts only
    assert [m["trained_this_run"] for m in third["models"]] == [k != fold_of_edited for k in range(2)]
    assert any(f"fold {fold_of_edited + 1}/2: reusing" in m for m in crossfit_log(caplog))


class Killed(Exception):
    pass


def test_cross_fitted_run_killed_after_the_first_fold_resumes(recipe_scorer, tmp_path, caplog):
    data = write_jsonl(tmp_path / "pairs.jsonl", learnable_pairs(12, seed=7))
    whole, out = tmp_path / "whole.jsonl", tmp_path / "cf.jsonl"
    kw = dict(scorer=str(recipe_scorer), dataset_name=str(data), folds=2, shard_size=100)
    score(ScoreConfig(output=str(whole), **kw))

    def kill(name):
        raise Killed

    with pytest.raises(Killed):
        score(ScoreConfig(output=str(out), **kw), on_shard=kill)  # fold 0 trained and scored, then killed
    assert not out.exists() and [p.name for p in (tmp_path / "cf.jsonl.folds").glob("fold-*") if p.is_dir()] == ["fold-0"]

    n_train = sum(r["rdo_fold"] == 0 for r in read_jsonl(whole))  # fold 1's model trains on fold 0
    caplog.set_level(logging.INFO, logger="rdo.score.crossfit")
    assert main(["score", "--scorer", str(recipe_scorer), "--dataset_name", str(data), "--output", str(out),
                 "--folds", "2", "--shard_size", "100"]) == 0
    assert [m for m in crossfit_log(caplog) if "training" in m or "reusing" in m] == [
        f"cross-fitting: fold 2/2: training on {n_train} rows (no trained fold model)"]  # fold 0 was scored: not retrained
    assert_out_of_sample(out, tmp_path)
    for a, b in zip(read_jsonl(out), read_jsonl(whole)):  # the same rows as the uninterrupted run
        assert a["rdo_fold"] == b["rdo_fold"] and a["rdo_reward_diff"] == pytest.approx(b["rdo_reward_diff"], abs=1e-5)
