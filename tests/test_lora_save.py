"""LoRA saves the *merged* model: the reloaded folder computes what the adapted model computed before saving,
and adapter/ reloaded with peft onto the base computes the same (policy logits; scorer scores)."""

from __future__ import annotations

import pytest
import torch
from conftest import synthetic_pairs, write_jsonl

import rdo.train.align
import rdo.score.training
from rdo.cli import main

TEXTS = ["say a: aaaa", "say h: hh</s>", "say c: q"]


def batch(tokenizer):
    enc = tokenizer(TEXTS, return_tensors="pt", padding=True)  # padded: the scorer's last-token pooling is exercised
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def capture_before_save(monkeypatch, module, fn):
    """Wrap `module.save_trained` to record `fn(adapted model)` just before the final save."""
    seen = {}
    real = module.save_trained

    def wrapper(trainer, *args, **kwargs):
        model = trainer.accelerator.unwrap_model(trainer.model)
        assert hasattr(model, "merge_and_unload")  # it is the LoRA-wrapped model
        was = model.training
        model.eval()
        with torch.no_grad():
            seen["adapted"] = fn(model)
        model.train(was)
        return real(trainer, *args, **kwargs)

    monkeypatch.setattr(module, "save_trained", wrapper)
    return seen


@pytest.mark.parametrize("precompute", ["true", "false"])
def test_policy_lora_merged_and_adapter_reproduce_the_adapted_logits(precompute, tiny_model, tokenizer, tmp_path, monkeypatch):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    inputs = batch(tokenizer)
    logits = lambda m: m(**inputs).logits.float()  # noqa: E731
    seen = capture_before_save(monkeypatch, rdo.train.align, logits)
    data = write_jsonl(tmp_path / "pairs.jsonl", synthetic_pairs(16))
    out = tmp_path / "out"
    assert main(["align", "--model_name_or_path", str(tiny_model), "--dataset_name", str(data), "--output_dir", str(out),
                 "--use_cpu", "true", "--report_to", "none", "--disable_tqdm", "true", "--per_device_train_batch_size", "4",
                 "--max_steps", "4", "--learning_rate", "5e-2", "--lora_r", "4", "--lora_alpha", "8",
                 "--precompute_ref", precompute]) == 0
    with torch.no_grad():
        base = logits(AutoModelForCausalLM.from_pretrained(tiny_model).eval())
        merged_model = AutoModelForCausalLM.from_pretrained(out).eval()
        merged = logits(merged_model)
        adapter = logits(PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), out / "adapter").eval())
    assert not any("lora" in n for n, _ in merged_model.named_parameters())
    assert (seen["adapted"] - base).abs().max() > 1e-3  # training moved the model: the unmerged base would fail below
    torch.testing.assert_close(merged, seen["adapted"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(adapter, seen["adapted"], atol=1e-5, rtol=1e-5)
    assert not (out / "adapter_config.json").exists() and not list(out.glob("*.bin"))


def test_scorer_lora_merged_and_adapter_reproduce_the_adapted_scores(tiny_model, tokenizer, tmp_path, monkeypatch):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from rdo.score.scorers import load_scorer

    inputs = batch(tokenizer)
    scores = lambda m: m(**inputs).logits[:, 0].float()  # noqa: E731
    seen = capture_before_save(monkeypatch, rdo.score.training, scores)
    data = write_jsonl(tmp_path / "pairs.jsonl", synthetic_pairs(16, with_coef=False))
    out = tmp_path / "rm"
    assert main(["train-rm", "--model_name_or_path", str(tiny_model), "--dataset_name", str(data), "--output_dir", str(out),
                 "--use_cpu", "true", "--report_to", "none", "--disable_tqdm", "true", "--per_device_train_batch_size", "4",
                 "--max_steps", "4", "--learning_rate", "5e-2", "--head_learning_rate", "5e-2", "--lora_r", "4"]) == 0
    with torch.no_grad():
        merged = scores(load_scorer(str(out), device="cpu").model)  # the folder `rdo score` reads
        base = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=1)
        base.config.pad_token_id = tokenizer.pad_token_id
        adapter = scores(PeftModel.from_pretrained(base, out / "adapter").eval())
    assert seen["adapted"].std() > 1e-4  # a trained head scores the texts differently
    torch.testing.assert_close(merged, seen["adapted"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(adapter, seen["adapted"], atol=1e-5, rtol=1e-5)
    assert (out / "rdo.json").is_file() and not (out / "adapter_config.json").exists()
