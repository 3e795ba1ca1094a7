"""A resumed run never trains on a stale reference, stale rows or a model folder overwritten since.

Each case trains 2 steps with a checkpoint, changes one input, and reruns the same command with more
steps: the run must refuse with one line naming what changed (the issue-16 defect: edited `chosen` texts,
same ids, resumed with the old reference log-probs). The unchanged rerun resumes and restores the reference.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from conftest import synthetic_pairs, write_jsonl

from rdo.cli import main


def argv(command: str, model: Path, data: Path, out: Path, steps: int, *extra: str) -> list[str]:
    return [command, "--model_name_or_path", str(model), "--dataset_name", str(data), "--output_dir", str(out),
            "--use_cpu", "true", "--report_to", "none", "--disable_tqdm", "true", "--seed", "0", "--logging_steps", "1",
            "--per_device_train_batch_size", "4", "--max_steps", str(steps), "--save_steps", "2",
            *(["--alpha", "0"] if command == "align" else []), *extra]


def run(capsys, *args) -> tuple[int, str]:
    rc = main(list(args))
    return rc, capsys.readouterr().err


@pytest.fixture
def trained(tiny_model, tmp_path):
    """(data file, output dir, model copy) after a 2-step DPO run with checkpoint-2."""
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    data = write_jsonl(tmp_path / "d.jsonl", synthetic_pairs(16, with_coef=False))
    out = tmp_path / "out"
    assert main(argv("align", model, data, out, 2, "--ref_cache_dir", str(tmp_path / "ref"))) == 0
    assert (out / "checkpoint-2").is_dir()
    return data, out, model, tmp_path / "ref"


def test_resume_unchanged_restores_reference(trained, capsys, caplog):
    data, out, model, ref = trained
    with caplog.at_level(logging.INFO):
        rc, err = run(capsys, *argv("align", model, data, out, 4, "--ref_cache_dir", str(ref)))
    assert rc == 0, err
    assert "restored from" in caplog.text and "same content key" in caplog.text
    steps = [e["step"] for e in json.loads((out / "train_metrics.json").read_text())["log_history"] if "loss" in e]
    assert steps == [1, 2, 3, 4] and "resuming from" in caplog.text  # it continued from checkpoint-2


def test_resume_after_edited_rows_is_refused(trained, capsys):
    data, out, model, ref = trained
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    write_jsonl(data, [{**r, "chosen": r["chosen"] + " edited"} for r in rows])  # same ids, same count
    rc, err = run(capsys, *argv("align", model, data, out, 4, "--ref_cache_dir", str(ref)))
    assert rc == 2
    assert "token ids differ" in err and "--overwrite_output_dir" in err
    assert not (out / "checkpoint-4").exists()


def test_resume_with_lower_max_length_is_refused(trained, capsys):
    data, out, model, ref = trained
    rc, err = run(capsys, *argv("align", model, data, out, 4, "--ref_cache_dir", str(ref), "--max_length", "12",
                                "--max_prompt_length", "6"))
    assert rc == 2 and "token ids differ" in err


def test_resume_with_other_precision_is_refused(trained, capsys):
    data, out, model, ref = trained
    rc, err = run(capsys, *argv("align", model, data, out, 4, "--ref_cache_dir", str(ref), "--bf16", "true"))
    assert rc == 2 and "precision" in err


def test_resume_after_model_folder_overwritten_is_refused(trained, capsys):
    from safetensors.torch import load_file, save_file

    data, out, model, ref = trained
    weights = load_file(str(model / "model.safetensors"))
    save_file({k: v + 0.01 for k, v in weights.items()}, str(model / "model.safetensors"), metadata={"format": "pt"})
    rc, err = run(capsys, *argv("align", model, data, out, 4, "--ref_cache_dir", str(ref)))
    assert rc == 2 and "content of --model_name_or_path changed" in err


def test_live_reference_rrhf_resume_after_model_overwritten_is_refused(tiny_model, tmp_path, capsys):
    """No precomputed reference to compare: the model's content is still checked."""
    from safetensors.torch import load_file, save_file

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    data = write_jsonl(tmp_path / "d.jsonl", synthetic_pairs(16, with_coef=False))
    out = tmp_path / "out"
    assert main(argv("align", model, data, out, 2, "--method", "rrhf")) == 0
    weights = load_file(str(model / "model.safetensors"))
    save_file({k: v * 1.01 for k, v in weights.items()}, str(model / "model.safetensors"), metadata={"format": "pt"})
    rc, err = run(capsys, *argv("align", model, data, out, 4, "--method", "rrhf"))
    assert rc == 2 and "content of --model_name_or_path changed" in err


def test_scorer_resume_after_edited_rows_is_refused(tiny_model, tmp_path, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", synthetic_pairs(16, with_coef=False))
    out = tmp_path / "rm"
    assert main(argv("train-rm", tiny_model, data, out, 2)) == 0
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    write_jsonl(data, [{**r, "rejected": r["rejected"] + "x"} for r in rows])
    rc, err = run(capsys, *argv("train-rm", tiny_model, data, out, 4))
    assert rc == 2 and "token ids differ" in err
