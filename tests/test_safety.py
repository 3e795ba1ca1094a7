"""Loading safety: pickle weights refused from folders (naming the file), hub ids loaded with safetensors only,
and a model's own Python code never run unless --trust_remote_code is given."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import synthetic_pairs, write_jsonl
from safetensors.torch import load_file

from rdo.cli import main
from rdo.models import load_causal_lm


def test_pickle_only_folder_is_refused_naming_the_file(tiny_model, tmp_path, capsys):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model, folder)
    torch.save(load_file(str(folder / "model.safetensors")), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"pytorch_model\.bin: pickle weights are refused"):
        load_causal_lm(str(folder))
    data = write_jsonl(tmp_path / "d.jsonl", synthetic_pairs(4))
    for command in (["align"], ["train-rm"]):
        assert main([*command, "--model_name_or_path", str(folder), "--dataset_name", str(data),
                     "--output_dir", str(tmp_path / "o"), "--use_cpu", "true", "--report_to", "none"]) == 2
        assert f"{folder / 'pytorch_model.bin'}: pickle weights are refused" in capsys.readouterr().err


def test_pickle_next_to_safetensors_is_never_unpickled(tiny_model, tmp_path):
    folder = tmp_path / "both"
    shutil.copytree(tiny_model, folder)
    (folder / "pytorch_model.bin").write_bytes(b"not a pickle: loading this would fail")
    model = load_causal_lm(str(folder))  # reads model.safetensors
    ref = load_file(str(tiny_model / "model.safetensors"))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in ref.items())


def test_hub_ids_are_loaded_with_safetensors_only_and_no_remote_code(monkeypatch):
    from transformers import AutoModelForCausalLM

    seen = {}
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", lambda name, **kw: seen.update(name=name, **kw))
    load_causal_lm("some-org/some-model")
    assert seen["use_safetensors"] is True and seen["trust_remote_code"] is False


EVIL = '''
import pathlib
pathlib.Path(__file__).with_name("RAN").write_text("remote code ran")
from transformers import LlamaConfig, LlamaForCausalLM

class EvilConfig(LlamaConfig):
    model_type = "evil"

class EvilModel(LlamaForCausalLM):
    config_class = EvilConfig
'''


def test_remote_code_runs_only_when_trusted(tiny_model, tmp_path):
    folder = tmp_path / "custom"
    shutil.copytree(tiny_model, folder)
    (folder / "modeling_evil.py").write_text(EVIL)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="evil", architectures=["EvilModel"],
                  auto_map={"AutoConfig": "modeling_evil.EvilConfig", "AutoModelForCausalLM": "modeling_evil.EvilModel"})
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_causal_lm(str(folder))
    assert not (folder / "RAN").exists()
    model = load_causal_lm(str(folder), trust_remote_code=True)
    assert type(model).__name__ == "EvilModel"
