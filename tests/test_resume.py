"""Exact resume: a run SIGKILLed mid-training and resumed ends where an uninterrupted run ends.

Each case trains a few steps on the tiny model three ways: uninterrupted; in a separate process that
the test kills with SIGKILL (from outside, once it sees a checkpoint folder appear) — then resumed
from what it left. Per-step logged values (losses, metrics, learning rate) agree to 1e-6 and the saved
parameters match.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import synthetic_pairs, synthetic_ranked, synthetic_unpaired, write_jsonl
from safetensors.torch import load_file

from rdo.cli import main

SCRIPT = Path(__file__).parent / "scripts" / "slow_cli.py"
STEPS = 6


def common(tiny_model: Path, data: Path, out: Path) -> list[str]:
    return ["--model_name_or_path", str(tiny_model), "--dataset_name", str(data), "--output_dir", str(out),
            "--use_cpu", "true", "--report_to", "none", "--disable_tqdm", "true", "--logging_steps", "1", "--seed", "0",
            "--per_device_train_batch_size", "4", "--max_steps", str(STEPS), "--save_steps", "1", "--save_total_limit", "3"]


def align_argv(method: str, extra=()):
    def build(tiny_model, data, out):
        return ["align", *common(tiny_model, data, out), "--method", method, "--learning_rate", "2e-3", *extra]
    return build


def diff_argv(tiny_model, data, out):
    return ["train-diff", *common(tiny_model, data, out), "--learning_rate", "1e-3", "--head_learning_rate", "1e-2",
            "--max_length", "96", "--max_prompt_length", "16"]


def start_killable(argv: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "RDO_TEST_STEP_SLEEP": "0.4"}
    return subprocess.Popen([sys.executable, str(SCRIPT), *argv], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def kill_after_checkpoint(proc: subprocess.Popen, out: Path, step: int, timeout: float = 240) -> None:
    """Poll for `checkpoint-<step>` (it appears only when complete), then SIGKILL the process."""
    deadline = time.monotonic() + timeout
    while not (out / f"checkpoint-{step}").is_dir():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (rc {proc.returncode}) before checkpoint-{step}: {proc.stderr.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no checkpoint-{step} after {timeout} s")
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    proc.stderr.close()


def steps_of(out: Path) -> list[dict]:
    history = json.loads((out / "train_metrics.json").read_text())["log_history"]
    return [e for e in history if "loss" in e]


def assert_same_run(a: Path, b: Path) -> None:
    sa, sb = steps_of(a), steps_of(b)
    assert [e["step"] for e in sa] == [e["step"] for e in sb] == list(range(1, STEPS + 1))
    for ea, eb in zip(sa, sb):
        assert ea.keys() == eb.keys()
        for k, v in ea.items():
            if isinstance(v, float):
                assert abs(v - eb[k]) <= 1e-6, (ea["step"], k, v, eb[k])
    pa, pb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert pa.keys() == pb.keys()
    for k in pa:
        torch.testing.assert_close(pa[k], pb[k], atol=1e-6, rtol=0, msg=k)


CASES = {
    "dpo+rc": (lambda: synthetic_pairs(24), align_argv("dpo")),
    "kto+rc": (lambda: synthetic_unpaired(24), align_argv("kto")),
    "rrhf+rc": (lambda: synthetic_ranked(24, k_range=(2, 3)), align_argv("rrhf")),
    "difference": (lambda: synthetic_pairs(24, with_coef=False), diff_argv),
}


@pytest.mark.slow  # a fresh interpreter per case: ~40 s each on 2 busy cores
@pytest.mark.parametrize("case", list(CASES))
def test_sigkill_then_resume_equals_uninterrupted(case, tiny_model, tmp_path, caplog):
    rows, build = CASES[case]
    data = write_jsonl(tmp_path / "data.jsonl", rows())
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(build(tiny_model, data, full)) == 0

    kill_after_checkpoint(start_killable(build(tiny_model, data, cut)), cut, step=2)
    assert not (cut / "train_metrics.json").exists()  # killed mid-run
    done = sorted(int(p.name.split("-")[1]) for p in cut.glob("checkpoint-*"))
    assert done and max(done) < STEPS
    for cache in data.parent.glob("rdo-ref-logps-*.pt"):  # the resumed run must not need (or recompute) the cache
        cache.unlink()

    with caplog.at_level("INFO"):
        assert main(build(tiny_model, data, cut)) == 0  # same command: resumes from the newest checkpoint
    assert f"resuming from {cut / f'checkpoint-{max(done)}'}" in caplog.text
    if case != "difference" and case != "rrhf+rc":  # DPO/KTO have a precomputed reference
        assert "restored from" in caplog.text and "cached to" not in caplog.text
    assert_same_run(full, cut)


def test_resume_never_computes_the_reference_from_the_trained_policy(tiny_model, tmp_path, monkeypatch, caplog):
    """The reference is the initial policy: on resume it comes from the checkpoint, or — for an older checkpoint
    without it — is recomputed from the initial weights (loaded before train() loads the checkpoint's)."""
    import rdo.train.align
    import rdo.train.reference

    data = write_jsonl(tmp_path / "data.jsonl", synthetic_pairs(24))
    full, cut = tmp_path / "full", tmp_path / "cut"
    build = align_argv("dpo")
    assert main(build(tiny_model, data, full)) == 0
    # A run as if stopped after step 3 (its later checkpoints and final model gone), and an older checkpoint
    # format without the reference file, with the cache deleted too: the resumed run has to compute it again.
    assert main([*build(tiny_model, data, cut), "--save_total_limit", str(STEPS)]) == 0
    for ckpt in cut.glob("checkpoint-*"):
        if int(ckpt.name.split("-")[1]) > 3:
            shutil.rmtree(ckpt)
        else:
            (ckpt / "rdo_reference.safetensors").unlink()
    (cut / "train_metrics.json").unlink()
    for cache in data.parent.glob("rdo-ref-logps-*.pt"):
        cache.unlink()
    initial = load_file(str(tiny_model / "model.safetensors"))
    seen = []
    real = rdo.train.reference.compute_reference

    def spy(model, *args, **kwargs):
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return real(model, *args, **kwargs)

    monkeypatch.setattr(rdo.train.reference, "compute_reference", spy)
    with caplog.at_level("INFO"):
        assert main(build(tiny_model, data, cut)) == 0
    assert f"resuming from {cut / 'checkpoint-3'}" in caplog.text and len(seen) == 1
    for k, v in initial.items():  # the reference model had the initial weights, not checkpoint-3's
        torch.testing.assert_close(seen[0][k], v, atol=0, rtol=0)
    assert_same_run(full, cut)


def test_resume_true_overwrite_and_changed_seed_warning(tiny_model, tmp_path, caplog):
    """`--resume_from_checkpoint true` and `--overwrite_output_dir` through the CLI."""
    data = write_jsonl(tmp_path / "data.jsonl", synthetic_pairs(16))
    out = tmp_path / "out"
    build = align_argv("dpo")
    assert main([*build(tiny_model, data, out), "--resume_from_checkpoint", "true"]) == 2  # nothing to resume: one-line error
    assert main([*build(tiny_model, data, out), "--max_steps", "2"]) == 0
    first = steps_of(out)
    caplog.clear()
    with caplog.at_level("INFO"):
        assert main([*build(tiny_model, data, out), "--max_steps", "2", "--overwrite_output_dir", "true", "--seed", "1"]) == 0
    assert "starting fresh" in caplog.text and "resuming" not in caplog.text
    assert steps_of(out)[0]["loss"] != first[0]["loss"]  # a fresh run with another seed
    caplog.clear()
    with caplog.at_level("WARNING"):  # resuming under another seed warns, naming both
        assert main([*build(tiny_model, data, out), "--max_steps", "3", "--seed", "2",
                     "--resume_from_checkpoint", str(out / "checkpoint-2")]) == 0
    assert "resuming with --seed 2" in caplog.text and "--seed 1" in caplog.text
    assert "--max_steps 3" in caplog.text


@pytest.mark.parametrize("build", [align_argv("dpo"), diff_argv], ids=["dpo+rc", "difference"])
def test_same_seed_same_losses_on_cpu(build, tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", synthetic_pairs(16))
    runs = []
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        assert main([*build(tiny_model, data, tmp_path / name), "--max_steps", "3", "--seed", seed]) == 0
        runs.append([e["loss"] for e in steps_of(tmp_path / name)])
    assert runs[0] == runs[1]  # bit-identical
    assert runs[0] != runs[2]  # and the seed is what decides (data order, initial head, pair order)


def test_resume_refuses_changed_coefficient_weights(tiny_model, tmp_path, capsys):
    """The weights are recomputed on resume and must equal the checkpoint's: another --alpha is refused."""
    data = write_jsonl(tmp_path / "data.jsonl", synthetic_pairs(16))
    out = tmp_path / "out"
    build = align_argv("dpo")
    assert main([*build(tiny_model, data, out), "--max_steps", "2"]) == 0
    (out / "train_metrics.json").unlink()
    assert main([*build(tiny_model, data, out), "--max_steps", "2", "--alpha", "1.0"]) == 2
    err = capsys.readouterr().err
    assert f"{out / 'checkpoint-2'}: the coefficient weights of this data (16 rows) differ" in err
    assert main([*build(tiny_model, data, out), "--max_steps", "2"]) == 0  # the original options resume
