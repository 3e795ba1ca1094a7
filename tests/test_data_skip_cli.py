"""`--skip_invalid` and `--dedupe_ids` through the CLI on every command that reads data (issue 12):
the skipped count, and that exactly the right rows survive. Without the flag, the first bad row is
a one-line error naming file, the editor's line and the field."""

from __future__ import annotations

import json
import math

import pytest

from hostile_data import build_env
from rdo.cli import main

ROWS = [  # (line, JSON text); rows valid for every command have an id r<line> and coefficient = line
    '{"id": "r1", "prompt": "p1", "chosen": "good", "rejected": "bad", "rdo_reward_diff": 1.0}',
    '{"id": "r2", "prompt": "p2", "chosen": "fine", "rejected": "poor", "rdo_reward_diff": 2.0}',
    "",
    '{"id": "r4", "prompt": "p4", "chosen": "broken',
    '{"id": "r5", "prompt": "p5", "rejected": "no chosen", "rdo_reward_diff": 5.0}',
    '{"id": "r6", "prompt": "p6", "chosen": "yes", "rejected": "no", "rdo_reward_diff": 6.0}',
    '{"id": "r7", "prompt": "p7", "chosen": "up", "rejected": "down", "rdo_reward_diff": NaN}',
    '{"id": "r8", "prompt": "p8", "chosen": "hi", "rejected": "bye", "rdo_reward_diff": 8.0}',
]
ALIGN_KEPT = [1.0, 2.0, 6.0, 8.0]  # the NaN coefficient is invalid only where coefficients are used
SCORER_KEPT = ["r1", "r2", "r6", "r7", "r8"]


@pytest.fixture(scope="module")
def env(tiny_model, tmp_path_factory):
    return build_env(tiny_model, tmp_path_factory.mktemp("skip_cli"))


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "prefs.jsonl"
    path.write_text("\n".join(ROWS) + "\n")
    return path


TRAIN = ["--use_cpu", "true", "--report_to", "none", "--disable_tqdm", "true", "--max_steps", "1",
         "--per_device_train_batch_size", "2", "--max_length", "64", "--max_prompt_length", "32"]


def run(capsys, *argv) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(list(argv))
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("command", ["align", "train-rm", "train-diff", "score", "eval accuracy"])
def test_without_skip_invalid_the_first_bad_line_is_named(env, data, tmp_path, capsys, command):
    if command in ("score", "eval accuracy"):
        argv = [*command.split(), "--scorer", str(env.reward), "--dataset_name", str(data), "--output", str(tmp_path / "o.jsonl")]
    else:
        argv = [command, "--model_name_or_path", str(env.tiny_model), "--dataset_name", str(data), "--output_dir", str(tmp_path / "o"), *TRAIN]
        argv += ["--max_length", "128"] if command == "train-diff" else []
    rc, err = run(capsys, *argv)
    assert rc == 2
    assert f"rdo {command}: error: {data}, row 4, field '<line>': not valid JSON" in err
    assert "Traceback" not in err


def test_align_skip_invalid(env, data, tmp_path, capsys):
    out = tmp_path / "align"
    rc, err = run(capsys, "align", "--model_name_or_path", str(env.tiny_model), "--dataset_name", str(data), "--output_dir", str(out),
                  *TRAIN, "--skip_invalid", "true", "--alpha", "1", "--coef_normalize", "none")
    assert rc == 0, err
    report = json.loads((out / "train_metrics.json").read_text())["data"]
    assert report["skipped"] == {"total": 3, "by_reason": {"<line>: not valid JSON": 1, "chosen: missing": 1, "rdo_reward_diff: coefficient is nan": 1}}
    assert report["rows_read"] == 7 and report["rows_trained"] == 4
    assert math.isclose(report["coefficients"]["reward_diff"]["mean"], sum(ALIGN_KEPT) / 4)  # rows 1, 2, 6, 8 and no other


@pytest.mark.parametrize("command", ["train-rm", "train-diff"])
def test_scorer_training_skip_invalid(env, data, tmp_path, capsys, command):
    out = tmp_path / command
    rc, err = run(capsys, command, "--model_name_or_path", str(env.tiny_model), "--dataset_name", str(data), "--output_dir", str(out),
                  *TRAIN, *(["--max_length", "128"] if command == "train-diff" else []), "--skip_invalid", "true")
    assert rc == 0, err
    report = json.loads((out / "train_metrics.json").read_text())["data"]
    assert report["skipped"] == {"total": 2, "by_reason": {"<line>: not valid JSON": 1, "chosen: missing": 1}}
    assert report["rows_read"] == 7 and report["pairs"] == len(SCORER_KEPT)


@pytest.mark.parametrize("scorer", ["reward", "difference"])
def test_score_skip_invalid_keeps_the_right_rows(env, data, tmp_path, capsys, scorer):
    out = tmp_path / "scored.jsonl"
    rc, err = run(capsys, "score", "--scorer", str(getattr(env, scorer)), "--dataset_name", str(data), "--output", str(out),
                  "--skip_invalid", "true")
    assert rc == 0, err
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in scored] == SCORER_KEPT
    assert [r["prompt"] for r in scored] == [f"p{i[1:]}" for i in SCORER_KEPT]  # each row is its own input row
    summary = json.loads((tmp_path / "scored.summary.json").read_text())
    assert summary["rows_written"] == 5 and summary["skipped"]["at_load"]["total"] == 2


def test_eval_accuracy_skip_invalid(env, data, tmp_path, capsys):
    out = tmp_path / "acc.json"
    rc, err = run(capsys, "eval", "accuracy", "--scorer", str(env.difference), "--dataset_name", str(data), "--output", str(out),
                  "--skip_invalid", "true", "--bootstrap", "0")
    assert rc == 0, err
    metrics = json.loads(out.read_text())
    assert metrics["n_pairs"] == 5 and metrics["skipped"]["at_load"]["total"] == 2


def test_dedupe_ids_through_score(env, tmp_path, capsys):
    path = tmp_path / "dups.jsonl"
    rows = [json.loads(ROWS[0]), json.loads(ROWS[1]), {**json.loads(ROWS[0]), "chosen": "edited copy"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "scored.jsonl"
    argv = ["score", "--scorer", str(env.reward), "--dataset_name", str(path), "--output", str(out)]
    rc, err = run(capsys, *argv, "--skip_invalid", "true")
    assert rc == 2 and f"{path}, row 3, field 'id': the same id 'r1' as row 1" in err
    rc, err = run(capsys, *argv, "--dedupe_ids", "true")
    assert rc == 0, err
    assert [json.loads(line)["chosen"] for line in out.read_text().splitlines()] == ["good", "fine"]  # the first r1 kept
    assert json.loads((tmp_path / "scored.summary.json").read_text())["skipped"]["at_load"]["total"] == 1
