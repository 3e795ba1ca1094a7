"""--attn_implementation and --model_revision reach the loaded models; a revision is part of the reference
cache key; --gradient_checkpointing changes neither the loss nor the gradients (full fine-tuning and LoRA)."""

from __future__ import annotations

import shutil

import pytest
import torch
from conftest import synthetic_pairs, write_jsonl

import rdo.train.align
import rdo.score.training
from rdo.cli import main

REPO = "rdo-test/tiny"
LORA_DROPOUT = "0.05"  # on (the default): checkpointing must replay the same dropout masks
COMMITS = {"main": "a" * 40, "v1": "b" * 40}


@pytest.fixture
def hub_cache(tiny_model, tmp_path, monkeypatch):
    """An offline hub cache holding REPO at two revisions with different weights (main: seed 0, v1: seed 1)."""
    import huggingface_hub.constants

    from rdo.tiny import build_tiny_model

    cache = tmp_path / "hub"
    repo = cache / ("models--" + REPO.replace("/", "--"))
    shutil.copytree(tiny_model, repo / "snapshots" / COMMITS["main"])
    build_tiny_model(repo / "snapshots" / COMMITS["v1"], seed=1)
    (repo / "refs").mkdir()
    for ref, commit in COMMITS.items():
        (repo / "refs" / ref).write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return repo / "snapshots"


def weights(model) -> torch.Tensor:
    return model.get_input_embeddings().weight.detach()


def test_revision_selects_the_hub_snapshot_and_its_fingerprint(hub_cache):
    from rdo.utils.fingerprint import model_fingerprint
    from rdo.models import load_causal_lm

    main_w, v1_w = (weights(load_causal_lm(REPO, revision=r)) for r in (None, "v1"))
    assert not torch.equal(main_w, v1_w)
    torch.testing.assert_close(v1_w, weights(load_causal_lm(str(hub_cache / COMMITS["v1"]))), rtol=0, atol=0)
    torch.testing.assert_close(main_w, weights(load_causal_lm(str(hub_cache / COMMITS["main"]))), rtol=0, atol=0)
    assert model_fingerprint(REPO) != model_fingerprint(REPO, "v1")


def test_revision_is_part_of_the_reference_cache_key(hub_cache, tmp_path):
    """Same hub id, two revisions: two cache entries, each holding its own revision's log-probs."""
    data = write_jsonl(tmp_path / "pairs.jsonl", synthetic_pairs(8))
    common = ["align", "--model_name_or_path", REPO, "--dataset_name", str(data), "--use_cpu", "true",
              "--report_to", "none", "--disable_tqdm", "true", "--per_device_train_batch_size", "4", "--max_steps", "1",
              "--ref_cache_dir", str(tmp_path / "cache"), "--save_strategy", "no"]
    assert main([*common, "--output_dir", str(tmp_path / "main")]) == 0
    assert main([*common, "--output_dir", str(tmp_path / "v1"), "--model_revision", "v1"]) == 0
    caches = sorted((tmp_path / "cache").glob("*.pt"))
    assert len(caches) == 2  # v1 did not reuse main's reference values
    a, b = (torch.load(c, weights_only=True) for c in caches)
    assert any(not torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k])) for k in a if torch.is_tensor(a[k]))


def test_revision_on_a_local_folder_is_a_one_line_error(tiny_model, tmp_path, capsys):
    data = write_jsonl(tmp_path / "pairs.jsonl", synthetic_pairs(4))
    for cmd in ("align", "train-rm"):
        rc = main([cmd, "--model_name_or_path", str(tiny_model), "--dataset_name", str(data), "--output_dir",
                   str(tmp_path / cmd), "--use_cpu", "true", "--report_to", "none", "--model_revision", "v1"])
        err = capsys.readouterr().err
        assert rc != 0 and f"rdo {cmd}: error: --model_revision 'v1': {tiny_model} is a local folder" in err, err
        assert "Traceback" not in err


def capture_attn(monkeypatch, module) -> dict:
    seen = {}
    real = module.save_trained

    def wrapper(trainer, *args, **kwargs):
        seen["attn"] = trainer.accelerator.unwrap_model(trainer.model).config._attn_implementation
        return real(trainer, *args, **kwargs)

    monkeypatch.setattr(module, "save_trained", wrapper)
    return seen


@pytest.mark.parametrize("attn", ["eager", None])
def test_attn_implementation_reaches_the_trained_models(attn, tiny_model, tmp_path, monkeypatch):
    """Policy (align), its live reference, and a reward model: the kernel asked for, or transformers' default (sdpa)."""
    loaded = []
    real_load = rdo.train.align.load_causal_lm
    monkeypatch.setattr(rdo.train.align, "load_causal_lm", lambda *a, **k: loaded.append(real_load(*a, **k)) or loaded[-1])
    data = write_jsonl(tmp_path / "pairs.jsonl", synthetic_pairs(8))
    flags = ["--attn_implementation", attn] if attn else []
    want = attn or "sdpa"
    seen = capture_attn(monkeypatch, rdo.train.align)
    common = ["--dataset_name", str(data), "--use_cpu", "true", "--report_to", "none", "--disable_tqdm", "true",
              "--per_device_train_batch_size", "4", "--max_steps", "1", "--save_strategy", "no", *flags]
    assert main(["align", "--model_name_or_path", str(tiny_model), "--output_dir", str(tmp_path / "p"),
                 "--precompute_ref", "false", "--ref_model_name_or_path", str(tiny_model), *common]) == 0
    assert seen["attn"] == want
    assert [m.config._attn_implementation for m in loaded] == [want, want]  # policy and reference
    seen = capture_attn(monkeypatch, rdo.score.training)
    assert main(["train-rm", "--model_name_or_path", str(tiny_model), "--output_dir", str(tmp_path / "rm"), *common]) == 0
    assert seen["attn"] == want


def test_attn_implementation_reaches_a_loaded_scorer(trained_scorers):
    from rdo.score.scorers import load_scorer

    assert load_scorer(str(trained_scorers["rm"]), "cpu", attn_implementation="eager").model.config._attn_implementation == "eager"
    assert load_scorer(str(trained_scorers["rm"]), "cpu").model.config._attn_implementation == "sdpa"


# --- gradient checkpointing ----------------------------------------------------------------------

def one_step(tiny_model, tmp_path, monkeypatch, lora: bool, checkpointing: bool) -> tuple[float, dict, bool]:
    """One DPO+rc step (α = 1): (loss, the trainable parameters' gradients, whether checkpointing was on)."""
    from rdo.train.trainer import RDOTrainer

    seen = {}
    real_step = RDOTrainer.training_step

    def training_step(self, model, inputs, *args, **kwargs):
        loss = real_step(self, model, inputs, *args, **kwargs)
        inner = self.accelerator.unwrap_model(model)
        seen["grads"] = {n: p.grad.detach().clone() for n, p in inner.named_parameters() if p.requires_grad}
        seen["on"] = inner.is_gradient_checkpointing
        return loss

    monkeypatch.setattr(RDOTrainer, "training_step", training_step)
    data = write_jsonl(tmp_path / "pairs.jsonl", synthetic_pairs(4, seed=2))
    out = tmp_path / f"run-{lora}-{checkpointing}"
    argv = ["align", "--model_name_or_path", str(tiny_model), "--dataset_name", str(data), "--output_dir", str(out),
            "--use_cpu", "true", "--report_to", "none", "--disable_tqdm", "true", "--per_device_train_batch_size", "4",
            "--max_steps", "1", "--logging_steps", "1", "--alpha", "1.0", "--save_strategy", "no", "--learning_rate", "1e-3",
            "--ref_cache_dir", str(out / "cache"), "--gradient_checkpointing", str(checkpointing).lower()]
    if lora:
        argv += ["--lora_r", "4", "--lora_dropout", LORA_DROPOUT]
    assert main(argv) == 0
    import json

    loss = next(e["loss"] for e in json.loads((out / "train_metrics.json").read_text())["log_history"] if "loss" in e)
    return loss, seen["grads"], seen["on"]


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(lora, tiny_model, tmp_path, monkeypatch):
    loss0, grads0, on0 = one_step(tiny_model, tmp_path, monkeypatch, lora, checkpointing=False)
    loss1, grads1, on1 = one_step(tiny_model, tmp_path, monkeypatch, lora, checkpointing=True)
    assert (on0, on1) == (False, True)
    assert loss1 == pytest.approx(loss0, rel=1e-6)
    assert grads0.keys() == grads1.keys() and len(grads0) > 0
    if lora:  # every adapter matrix, including those inside the checkpointed decoder layers, gets a gradient
        assert all("lora" in n for n in grads0) and all(g.abs().sum() > 0 for n, g in grads1.items() if "lora_B" in n)
        assert any("layers.0." in n for n in grads1)
    for name in grads0:
        torch.testing.assert_close(grads1[name], grads0[name], rtol=1e-5, atol=1e-7, msg=name)
