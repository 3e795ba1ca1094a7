"""benchmarks/gpu/check_engines.py, run here on one CPU process: its checks pass on a correct run and fail on
each broken output a wrong engine save or sharding would leave (empty/placeholder tensors, untrained weights,
reordered or changed rows, a missing step)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch

import rdo.train.align
from rdo.cli import main

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "gpu" / "check_engines.py"


@pytest.fixture(scope="module")
def ce():
    spec = importlib.util.spec_from_file_location("check_engines", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_engines_on_one_cpu_process(ce, tmp_path, monkeypatch):
    from safetensors.torch import load_file, save_file

    monkeypatch.setattr(rdo.train.align, "save_trained", rdo.train.align.save_trained)  # train() wraps it; restored after
    work = tmp_path / "work"
    ce.prepare(work)
    with pytest.raises(SystemExit) as done:
        ce.train(work, "single", ["--use_cpu", "true"])
    assert done.value.code == 0
    good = ce.verify(work, "single")
    assert good["ok"], good
    assert good["max_abs_logit_diff_saved_vs_trainer"] < 1e-5 < good["max_abs_logit_diff_initial_vs_trainer"]

    def broken(name: str, edit) -> dict:
        shutil.copytree(work / "single", work / name)
        edit(work / name / "out" / "model.safetensors")
        return ce.verify(work, name)

    def empty_tensor(path):  # what a rank-0-only save_pretrained writes under ZeRO-3
        state = load_file(path)
        state["model.layers.0.mlp.down_proj.weight"] = torch.empty(0)
        save_file(state, path, metadata={"format": "pt"})

    def untrained(path):  # a save of the initial (or stale) weights
        shutil.copy(work / "model" / "model.safetensors", path)

    def missing_tensor(path):
        state = load_file(path)
        del state["model.norm.weight"]
        save_file(state, path, metadata={"format": "pt"})

    assert broken("empty", empty_tensor)["bad_shape"] == {"model.layers.0.mlp.down_proj.weight": [[0], [64, 128]]}
    stale = broken("stale", untrained)
    assert not stale["ok"] and stale["max_abs_logit_diff_saved_vs_trainer"] > 1e-3
    assert broken("missing", missing_tensor)["missing"] == ["model.norm.weight"]
    for name in ("empty", "stale", "missing"):
        assert not json.loads((work / "results" / f"save-{name}.json").read_text())["ok"]
    shutil.copytree(work / "single", work / "nosave")
    (work / "nosave" / "out" / "model.safetensors").unlink()  # FSDP's SHARDED_STATE_DICT final save writes none
    assert not ce.verify(work, "nosave")["ok"]

    # (d) the reference cache: equal to itself; a changed value or row order fails
    assert ce.same_reference(work, "single", "single")["ok"]
    (cache,) = (work / "stale" / "cache").glob("*.pt")
    values = torch.load(cache, weights_only=True)
    values["ref_chosen_logps"][3] += 1e-2
    torch.save(values, cache)
    assert not ce.same_reference(work, "single", "stale")["ok"]
    values["rdo_row"] = values["rdo_row"].flip(0)
    torch.save(values, cache)
    assert ce.same_reference(work, "single", "stale")["error"] == "the rows differ (order or set)"
    assert "expected one reference cache file, found 0" in ce.same_reference(work, "single", "absent")["error"]

    # (c) rdo score outputs: equal to itself; reordered rows or a changed value fail
    one = work / "score-one.jsonl"
    assert main(["score", "--scorer", str(work / "rm"), "--dataset_name", str(work / "held.jsonl"), "--output", str(one),
                 "--device", "cpu", "--batch_size", "3", "--shard_size", "4"]) == 0
    assert ce.same_scores(work, one, one)["ok"]
    rows = [json.loads(x) for x in one.read_text().splitlines()]
    assert len(rows) == 13
    swapped = work / "score-swapped.jsonl"
    swapped.write_text("".join(json.dumps(r) + "\n" for r in [rows[1], rows[0], *rows[2:]]))
    assert not ce.same_scores(work, one, swapped)["ok"]
    rows[5]["rdo_reward_diff"] += 1e-3
    changed = work / "score-changed.jsonl"
    changed.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert ce.same_scores(work, one, changed)["max_abs_diff"] == pytest.approx(1e-3, abs=1e-6)
    assert not json.loads((work / "results" / "score-score-changed-vs-score-one.json").read_text())["ok"]

    # the verdict: a failed check or a step that left no result makes it fail
    summary = ce.verdict(work, tmp_path / "verdict.json", ["train-single", "save-single", "save-zero3"])
    assert not summary["ok"] and summary["missing"] == ["save-zero3"] and "save-stale" in summary["failed"]
    for p in (work / "results").glob("*.json"):
        if p.stem not in ("train-single", "save-single"):
            p.unlink()
    assert ce.verdict(work, tmp_path / "verdict.json", ["train-single", "save-single"])["ok"]
