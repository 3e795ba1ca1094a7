"""One content key for everything a run reads (rdo.utils.content): every config field that names a path
declares its kind, and `rdo run` redoes a stage when a file named only inside its `args` changes."""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import pytest
import yaml

import rdo.config as C
from rdo.utils.content import KINDS, config_content, content_of, field_kind

# a field whose name says it names a file, folder, hub id or module
PATHISH = re.compile(r"(name_or_path|dataset_name|^scorer$|generations|judge_local|judge_template|reward_fn|^key$|sheets|"
                     r"^pipeline$|candidates|deepspeed|fsdp_config|^output$|_dir$|_file$|_path$|dataset_override)")


def config_classes():
    return [getattr(C, n) for n in dir(C) if n.endswith("Config") and dataclasses.is_dataclass(getattr(C, n))]


@pytest.mark.parametrize("cls", config_classes(), ids=lambda c: c.__name__)
def test_every_path_field_declares_its_content_kind(cls):
    missing = [f.name for f in dataclasses.fields(cls)
               if PATHISH.search(f.name) and "str" in str(f.type) and field_kind(f) is None]
    assert not missing, f"{cls.__name__}: fields naming paths without a content kind (arg(..., content=...)): {missing}"
    for f in dataclasses.fields(cls):
        if field_kind(f) is not None:
            assert field_kind(f) in KINDS, (cls.__name__, f.name, field_kind(f))


def test_content_of_follows_the_bytes_not_the_path(tmp_path, tiny_model):
    a = tmp_path / "a.txt"
    a.write_text("one")
    first = content_of("file", str(a))
    a.write_text("two")
    assert content_of("file", str(a)) != first
    b = tmp_path / "b.txt"
    b.write_text("two")
    assert content_of("file", str(b)) == content_of("file", str(a))  # same bytes, another path: same key
    model = tmp_path / "m"
    shutil.copytree(tiny_model, model)
    before = content_of("model", str(model))
    assert before == content_of("model", str(tiny_model))
    (model / "config.json").write_text((model / "config.json").read_text().replace("}", ', "x": 1}', 1))
    assert content_of("model", str(model)) != before
    assert content_of("output", str(a)) is None


def test_module_content_is_its_source(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "my_reward_mod.py").write_text("def f(p, r):\n    return 1.0\n")
    first = content_of("module", "my_reward_mod:f")
    (tmp_path / "my_reward_mod.py").write_text("def f(p, r):\n    return 2.0\n")
    assert content_of("module", "my_reward_mod:f") != first
    assert content_of("module", "my_reward_mod:g") != content_of("module", "my_reward_mod:f")


def test_config_content_from_values_matches_the_config(tmp_path, tiny_model):
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n')
    values = {"model_name_or_path": str(tiny_model), "dataset_name": str(data), "output_dir": str(tmp_path / "o"),
              "use_cpu": True, "report_to": "none"}
    cfg = C.AlignConfig(**values)
    assert config_content(cfg) == config_content(cls=C.AlignConfig, values=values)
    assert set(config_content(cfg)) == {"model_name_or_path", "dataset_name"}


# --- rdo run: files named inside a stage's args key it ----------------------------------------------

def _stages(tmp: Path, model: Path, **sections):
    from rdo.pipeline.stages import Builder

    spec = {"run_dir": str(tmp / "run"), "model": str(model),
            "data": {"train": {"dataset_name": str(tmp / "train.jsonl")}, "test": {"dataset_name": str(tmp / "test.jsonl")}},
            **sections}
    return {s.name: s for s in Builder(spec, tmp / "run", "p.yaml").build()}


def _key(tmp, model, stage, **sections):
    from rdo.pipeline.run import stage_key

    return stage_key(_stages(tmp, model, **sections)[stage], tmp / "run")


@pytest.fixture
def pipe_files(tmp_path, tiny_model):
    from conftest import synthetic_pairs, write_jsonl

    write_jsonl(tmp_path / "train.jsonl", synthetic_pairs(4, with_coef=False))
    write_jsonl(tmp_path / "test.jsonl", synthetic_pairs(4, seed=1, with_coef=False))
    return tmp_path, tiny_model


def test_stage_key_follows_judge_template_and_local_judge(pipe_files):
    tmp, model = pipe_files
    template = tmp / "judge.txt"
    template.write_text("Q {question} A {response_1} B {response_2}")
    judge_model = tmp / "judge_model"
    shutil.copytree(model, judge_model)
    sections = {"align": {"data": "train", "methods": ["dpo"], "alphas": [0]}, "generate": {"data": "test"},
                "eval_judge": {"pairs": [["base", "align_dpo_a0"]],
                               "args": {"judge_template": str(template), "judge_local": [str(judge_model)]}}}
    name = next(n for n in _stages(tmp, model, **sections) if n.startswith("eval_judge"))
    before = _key(tmp, model, name, **sections)
    template.write_text("Question {question} 1 {response_1} 2 {response_2}")
    after_template = _key(tmp, model, name, **sections)
    assert after_template != before
    (judge_model / "config.json").write_text((judge_model / "config.json").read_text().replace("}", ', "y": 2}', 1))
    assert _key(tmp, model, name, **sections) != after_template


def test_stage_key_follows_reward_fn_source(pipe_files, monkeypatch):
    tmp, model = pipe_files
    monkeypatch.syspath_prepend(str(tmp))
    (tmp / "gold_mod.py").write_text("def gold(p, r):\n    return len(r)\n")
    sections = {"align": {"data": "train", "methods": ["dpo"], "alphas": [0]}, "generate": {"data": "test"},
                "eval_reward": {"reward_fn": ["gold_mod:gold"]}}
    before = _key(tmp, model, "eval_reward", **sections)
    (tmp / "gold_mod.py").write_text("def gold(p, r):\n    return -len(r)\n")
    assert _key(tmp, model, "eval_reward", **sections) != before


def test_stage_key_follows_ref_model_deepspeed_json_and_launch_config(pipe_files):
    tmp, model = pipe_files
    ref = tmp / "ref"
    shutil.copytree(model, ref)
    ds = tmp / "ds.json"
    ds.write_text('{"zero_optimization": {"stage": 2}}')
    acc = tmp / "acc.yaml"
    acc.write_text("num_processes: 2\n")
    sections = {"launch": f"accelerate launch --config_file {acc}",
                "align": {"data": "train", "methods": ["dpo"], "alphas": [0],
                          "args": {"ref_model_name_or_path": str(ref), "deepspeed": str(ds)}}}
    k0 = _key(tmp, model, "align_dpo_a0", **sections)
    (ref / "config.json").write_text((ref / "config.json").read_text().replace("}", ', "z": 3}', 1))
    k1 = _key(tmp, model, "align_dpo_a0", **sections)
    ds.write_text('{"zero_optimization": {"stage": 3}}')
    k2 = _key(tmp, model, "align_dpo_a0", **sections)
    acc.write_text("num_processes: 4\n")
    k3 = _key(tmp, model, "align_dpo_a0", **sections)
    assert len({k0, k1, k2, k3}) == 4
    assert _key(tmp, model, "align_dpo_a0", **sections) == k3  # and nothing else moves it


def test_rerun_redoes_stage_after_reward_fn_edit(pipe_files, monkeypatch, caplog):
    """End to end: `rdo run` twice; the second run redoes eval_reward (and only stages downstream of it)."""
    import logging

    from rdo.config import RunConfig
    from rdo.pipeline.run import run

    tmp, model = pipe_files
    monkeypatch.syspath_prepend(str(tmp))
    (tmp / "gold_mod2.py").write_text("def gold(p, r):\n    return float(len(r))\n")
    training = {"use_cpu": True, "report_to": "none", "disable_tqdm": True, "max_steps": 1, "per_device_train_batch_size": 2,
                "save_strategy": "no", "seed": 0}
    spec = {"run_dir": str(tmp / "run"), "model": str(model), "training": training,
            "inference": {"device": "cpu", "batch_size": 4},
            "data": {"train": {"dataset_name": str(tmp / "train.jsonl")}, "test": {"dataset_name": str(tmp / "test.jsonl")}},
            "align": {"data": "train", "methods": ["dpo"], "alphas": [0]},
            "generate": {"data": "test", "args": {"max_new_tokens": 4}},
            "eval_reward": {"reward_fn": ["gold_mod2:gold"]}, "report": False}
    path = tmp / "p.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert set(run(RunConfig(pipeline=str(path))).values()) == {"done"}
    (tmp / "gold_mod2.py").write_text("def gold(p, r):\n    return -float(len(r))\n")
    with caplog.at_level(logging.INFO):
        status = run(RunConfig(pipeline=str(path)))
    assert status["eval_reward"] == "done"
    assert {k for k, v in status.items() if v == "skipped"} == set(status) - {"eval_reward"}
