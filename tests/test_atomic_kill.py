"""Artifacts are whole or absent: writers SIGKILLed at random points (several seeds) leave no half-written file.

The killed processes are forks of the test process (a real process, killed from outside with SIGKILL),
so no interpreter start-up is paid per kill. Inside them the writes are slowed (a short sleep before
each tensor file, JSON file and rename), so random kill times land inside checkpoint and final saves.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch
from conftest import synthetic_pairs, write_jsonl
from safetensors.torch import load_file

from rdo.utils import atomic

FORK = multiprocessing.get_context("fork")


def _train_slowly(argv: list[str], seed: int) -> None:
    import safetensors.torch

    import rdo.utils.atomic
    from rdo.cli import main

    rng = random.Random(seed)

    def slowed(fn):
        def wrapper(*args, **kwargs):
            time.sleep(rng.uniform(0, 0.03))
            return fn(*args, **kwargs)
        return wrapper

    torch.save = slowed(torch.save)
    safetensors.torch.save_file = slowed(safetensors.torch.save_file)
    rdo.utils.atomic.move_into_place = slowed(rdo.utils.atomic.move_into_place)
    rdo.utils.atomic.write_text = slowed(rdo.utils.atomic.write_text)
    os._exit(main(argv))


def check_artifacts(out: Path) -> list[Path]:
    """Every artifact in `out` is complete and readable; returns the leftovers of interrupted writes."""
    leftovers = []
    for p in sorted(out.iterdir()):
        if atomic.TMP_TAG in p.name:
            leftovers.append(p)
        elif p.name.startswith("checkpoint-"):
            step = int(p.name.split("-")[1])
            state = json.loads((p / "trainer_state.json").read_text())
            assert state["global_step"] == step
            load_file(str(p / "model.safetensors"))
            torch.load(p / "optimizer.pt", weights_only=True)
            torch.load(p / "scheduler.pt", weights_only=True)
            torch.load(p / "rng_state.pth", weights_only=False)
            assert json.loads((p / "rdo_config.json").read_text())["output_dir"] == str(out)
            assert json.loads((p / "rdo_rows.json").read_text())["n"] == 16
            assert set(load_file(str(p / "rdo_reference.safetensors"))) == {"ref_chosen_logps", "ref_rejected_logps",
                                                                             "rdo_row", "rdo_example"}
        elif p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".safetensors":
            load_file(str(p))
        elif p.is_dir():
            assert p.name in ("adapter",), p
    if (out / "train_metrics.json").exists():  # published last: the final folder is complete
        for name in ("config.json", "model.safetensors", "rdo_config.json", "tokenizer.json"):
            assert (out / name).is_file(), name
    return leftovers


@pytest.mark.parametrize("seed", [0, 1, 2, 3, "final"])
def test_killed_training_leaves_whole_artifacts_then_resumes(seed, tiny_model, tmp_path, caplog):
    """Random kill times after the first checkpoint; "final": killed while the final model is being published."""
    from rdo.cli import main

    data = write_jsonl(tmp_path / "data.jsonl", synthetic_pairs(16))
    out = tmp_path / "out"
    argv = ["align", "--model_name_or_path", str(tiny_model), "--dataset_name", str(data), "--output_dir", str(out),
            "--use_cpu", "true", "--report_to", "none", "--disable_tqdm", "true", "--logging_steps", "1",
            "--per_device_train_batch_size", "4", "--max_steps", "4", "--save_steps", "1", "--learning_rate", "2e-3"]
    child = FORK.Process(target=_train_slowly, args=(argv, seed))
    child.start()
    deadline = time.monotonic() + 120
    first = out / ("rdo-final.tmp-staging" if seed == "final" else "checkpoint-1")
    while not first.exists() and child.is_alive() and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(random.Random(seed).uniform(0, 1.0 if seed != "final" else 0.05))  # within the remaining steps / saves
    if child.is_alive():
        os.kill(child.pid, signal.SIGKILL)
    child.join()
    leftovers = check_artifacts(out)
    print(f"seed {seed}: killed={child.exitcode == -signal.SIGKILL} leftovers={[p.name for p in leftovers]} "
          f"entries={sorted(p.name for p in out.iterdir())}")

    with caplog.at_level("INFO"):
        assert main(argv) == 0  # resumes (or, if the run had finished, re-publishes the same final model)
    for p in leftovers:
        assert f"removed {p}" in caplog.text
    assert check_artifacts(out) == []
    assert json.loads((out / "train_metrics.json").read_text())["log_history"][-1]["step"] == 4


def _rewrite_forever(path: Path) -> None:
    i = 0
    while True:
        atomic.write_json(path, {"version": i, "payload": [i] * 20000})
        i += 1


@pytest.mark.parametrize("seed", range(6))
def test_killed_json_writer_leaves_old_or_new_file(seed, tmp_path):
    path = tmp_path / "metrics.json"
    child = FORK.Process(target=_rewrite_forever, args=(path,))
    child.start()
    time.sleep(0.2 + random.Random(seed).uniform(0, 0.5))
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    if path.exists():
        obj = json.loads(path.read_text())
        assert obj["payload"] == [obj["version"]] * 20000
    removed = atomic.clean_leftovers(tmp_path)
    assert all(atomic.TMP_TAG in p.name for p in removed)
    assert [p.name for p in tmp_path.iterdir()] in ([], ["metrics.json"])
