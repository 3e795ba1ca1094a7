"""The reference log-prob cache is keyed by content: changed weights, tokenizer or precision recompute it."""

from __future__ import annotations

import logging
import math
import os
import shutil

import pytest
import torch

from conftest import synthetic_pairs, write_jsonl
from rdo.train.align import align
from rdo.config import AlignConfig

LN2 = math.log(2)


def run(model, data, out, cache, **kw) -> dict:
    cfg = AlignConfig(model_name_or_path=str(model), dataset_name=str(data), output_dir=str(out), use_cpu=True,
                      learning_rate=2e-3, num_train_epochs=1, per_device_train_batch_size=8, logging_steps=1,
                      alpha=0.0, seed=0, ref_cache_dir=str(cache), disable_tqdm=True, report_to="none", **kw)
    return align(cfg)


def step1(metrics: dict) -> float:
    return metrics["log_history"][0]["loss/unweighted"]


def reference_log(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("reference log-probs:")]


def test_weights_changed_in_place_recompute_the_cache(tiny_model, tmp_path, caplog):
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    data = write_jsonl(tmp_path / "pairs.jsonl", synthetic_pairs(8))
    cache = tmp_path / "cache"
    caplog.set_level(logging.INFO, logger="rdo.train.reference")

    first = run(model, data, tmp_path / "a", cache)
    assert step1(first) == pytest.approx(LN2, abs=1e-6)
    assert any("computing (no cache" in m for m in reference_log(caplog))

    caplog.clear()
    again = run(model, data, tmp_path / "b", cache)
    assert again["data"]["reference_cache"] == first["data"]["reference_cache"]
    assert any("using cache" in m for m in reference_log(caplog))

    # other weights saved over the same folder: the same path string, different content
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(model)
    with torch.no_grad():
        for p in lm.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    lm.save_pretrained(model)

    caplog.clear()
    changed = run(model, data, tmp_path / "c", cache)
    assert any("computing (key changed: reference)" in m for m in reference_log(caplog)), reference_log(caplog)
    assert changed["data"]["reference_cache"] != first["data"]["reference_cache"]
    assert step1(changed) == pytest.approx(LN2, abs=1e-6)  # a stale cache gave a nonzero log-ratio here


def test_tokenizer_change_recomputes(tiny_model, tmp_path, caplog):
    """A chat template edit changes the tokenizer's fingerprint, so the cache is not reused."""
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    data = write_jsonl(tmp_path / "pairs.jsonl", synthetic_pairs(4))
    cache = tmp_path / "cache"
    caplog.set_level(logging.INFO, logger="rdo.train.reference")
    first = run(model, data, tmp_path / "a", cache, max_steps=1)
    from rdo.models import load_tokenizer

    tok = load_tokenizer(str(model))
    tok.chat_template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    tok.save_pretrained(model)
    caplog.clear()
    second = run(model, data, tmp_path / "b", cache, max_steps=1)
    assert any("key changed: tokenizer" in m for m in reference_log(caplog)), reference_log(caplog)
    assert second["data"]["reference_cache"] != first["data"]["reference_cache"]


def test_fp32_and_bf16_caches_never_collide(tiny_model, tmp_path, caplog):
    data = write_jsonl(tmp_path / "pairs.jsonl", synthetic_pairs(8))
    cache = tmp_path / "cache"
    caplog.set_level(logging.INFO, logger="rdo.train.reference")
    fp32 = run(tiny_model, data, tmp_path / "fp32", cache)
    stamp = os.stat(fp32["data"]["reference_cache"]).st_mtime_ns
    caplog.clear()
    bf16 = run(tiny_model, data, tmp_path / "bf16", cache, bf16=True)
    assert any("key changed: precision" in m for m in reference_log(caplog)), reference_log(caplog)
    assert bf16["data"]["reference_cache"] != fp32["data"]["reference_cache"]
    assert step1(fp32) == pytest.approx(LN2, abs=1e-6) and step1(bf16) == pytest.approx(LN2, abs=1e-6)
    # the two files hold different values (bf16 autocast rounds the log-probs) and both stay usable
    a, b = (torch.load(m["data"]["reference_cache"], weights_only=True) for m in (fp32, bf16))
    assert a["key"]["precision"] == "fp32" and b["key"]["precision"] == "bf16"
    assert not torch.equal(a["ref_chosen_logps"], b["ref_chosen_logps"])
    caplog.clear()
    again = run(tiny_model, data, tmp_path / "fp32-again", cache)
    assert again["data"]["reference_cache"] == fp32["data"]["reference_cache"]
    assert os.stat(fp32["data"]["reference_cache"]).st_mtime_ns == stamp  # read, not rewritten
    assert any("using cache" in m for m in reference_log(caplog))
