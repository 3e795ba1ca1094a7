"""Under a launcher (WORLD_SIZE > 1) every command runs distributed or refuses in one line naming the fix;
DeepSpeed ZeRO-3 with LoRA is refused at config time (its final merged save hangs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import free_port


@pytest.fixture
def launched(monkeypatch):
    """The environment torchrun gives rank 0 of 2, with no rendezvous address: nothing can join a group."""
    for k, v in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(k, v)
    for k in ("MASTER_ADDR", "MASTER_PORT", "ACCELERATE_USE_CPU"):
        monkeypatch.delenv(k, raising=False)


def test_every_command_under_a_cpu_launcher_runs_distributed_or_refuses(launched, tmp_path, capsys):
    from rdo.cli import COMMANDS, main
    from rdo.utils.distributed import SPLIT_COMMANDS, TRAINER_COMMANDS, check_launch, check_trainer_launch

    assert set(SPLIT_COMMANDS + TRAINER_COMMANDS) <= set(COMMANDS)
    for command in COMMANDS:
        words = command.split()
        if command in SPLIT_COMMANDS:  # each process takes its share (tests/test_generate.py, test_distributed_passes.py)
            check_launch(command)
            continue
        if command in TRAINER_COMMANDS:  # refused before TrainingArguments joins a process group (it would wait for rank 1)
            assert main([*words, "--output_dir", str(tmp_path / "out")]) == 2
            err = capsys.readouterr().err
            assert "2 processes (WORLD_SIZE=2) on a machine without GPUs: add --use_cpu true" in err, (command, err)
            check_trainer_launch(use_cpu=True)  # with it: one gloo DDP job (tests/test_distributed_passes.py)
            continue
        assert main([*words, "--help"]) == 2  # refused before anything runs, even the help
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "runs in one process, but a launcher started 2 (WORLD_SIZE=2): run it without torchrun" in err, (command, err)


@pytest.mark.multiproc
def test_torchrun_on_cpu_without_use_cpu_is_refused_by_every_rank(tmp_path):
    """The real launcher: both ranks stop with the one line, and neither writes --output_dir."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
                           "-m", "rdo.cli", "align", "--output_dir", str(tmp_path / "out"), "--model_name_or_path", "m",
                           "--dataset_name", "d"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert proc.stderr.count("add --use_cpu true to train them as one distributed (gloo) job") == 2, proc.stderr[-2000:]
    assert not (tmp_path / "out").exists()


def _ds(tmp_path, stage: int):
    path = tmp_path / f"zero{stage}.json"
    path.write_text(json.dumps({"zero_optimization": {"stage": stage}, "train_micro_batch_size_per_gpu": "auto"}))
    return path


@pytest.mark.parametrize("kind", ["align", "train-rm"])
def test_zero3_with_lora_is_refused_at_config_time(kind, tmp_path):
    from rdo.config import AlignConfig, TrainRMConfig

    cls = AlignConfig if kind == "align" else TrainRMConfig
    with pytest.raises(ValueError, match=r"ZeRO-3 with LoRA \(--lora_r\): the final merged save hangs .*use ZeRO-2 \(configs/accelerate/zero2.yaml\)"):
        cls(output_dir=str(tmp_path / "o"), model_name_or_path="m", dataset_name="d", lora_r=4, deepspeed=str(_ds(tmp_path, 3)))


def test_zero_stage_is_read_from_the_json_or_accelerate_launch(tmp_path, monkeypatch):
    from rdo.utils.distributed import zero_stage

    for k in ("ACCELERATE_USE_DEEPSPEED", "ACCELERATE_DEEPSPEED_ZERO_STAGE", "ACCELERATE_DEEPSPEED_CONFIG_FILE"):
        monkeypatch.delenv(k, raising=False)
    assert zero_stage(str(_ds(tmp_path, 3))) == 3 and zero_stage(str(_ds(tmp_path, 2))) == 2
    assert zero_stage({"zero_optimization": {"stage": 3}}) == 3 and zero_stage(None) is None
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")  # accelerate launch --config_file configs/accelerate/zero3.yaml
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    assert zero_stage(None) == 3
    monkeypatch.delenv("ACCELERATE_DEEPSPEED_ZERO_STAGE")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", str(_ds(tmp_path, 2)))
    assert zero_stage(None) == 2
    with pytest.raises(ValueError, match="not a DeepSpeed JSON file"):
        zero_stage(str(tmp_path / "missing.json"))
