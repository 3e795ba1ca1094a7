"""Numerical guards: a NaN step is skipped (weights and optimizer moments untouched, counted), K in a row stop
the run with a one-line message naming the last good checkpoint, and NaN reference log-probs name their row."""

from __future__ import annotations

import json

import torch
from conftest import synthetic_pairs, write_jsonl
from safetensors.torch import load_file

import rdo.train.trainer
from rdo.cli import main


def argv(tiny_model, data, out, *extra):
    return ["align", "--model_name_or_path", str(tiny_model), "--dataset_name", str(data), "--output_dir", str(out),
            "--use_cpu", "true", "--report_to", "none", "--disable_tqdm", "true", "--logging_steps", "1",
            "--per_device_train_batch_size", "4", "--max_steps", "4", "--save_steps", "1", "--save_total_limit", "5",
            "--learning_rate", "2e-3", *extra]


def nan_at(monkeypatch, steps: set[int]):
    """Make the loss of the given optimizer steps (1-based) NaN, as a bad batch would."""
    real = rdo.train.trainer.RDOTrainer.compute_loss

    def compute_loss(self, model, inputs, *args, **kwargs):
        loss = real(self, model, inputs, *args, **kwargs)
        return loss * float("nan") if self.state.global_step + 1 in steps and model.training else loss

    monkeypatch.setattr(rdo.train.trainer.RDOTrainer, "compute_loss", compute_loss)


def test_nonfinite_step_is_skipped_and_counted(tiny_model, tmp_path, monkeypatch, caplog):
    data = write_jsonl(tmp_path / "d.jsonl", synthetic_pairs(16))
    out = tmp_path / "out"
    nan_at(monkeypatch, {2})
    with caplog.at_level("WARNING"):
        assert main(argv(tiny_model, data, out)) == 0
    assert "step 2: non-finite loss or gradient norm" in caplog.text
    w1, w2, w3 = (load_file(str(out / f"checkpoint-{k}" / "model.safetensors")) for k in (1, 2, 3))
    assert all(torch.equal(w1[k], w2[k]) for k in w1)  # step 2 changed nothing
    assert not all(torch.equal(w2[k], w3[k]) for k in w2)  # step 3 trained again
    o1, o2 = (torch.load(out / f"checkpoint-{k}" / "optimizer.pt", weights_only=True)["state"] for k in (1, 2))
    assert all(torch.equal(o1[i]["exp_avg"], o2[i]["exp_avg"]) and o1[i]["step"] == o2[i]["step"] for i in o1)
    logs = [e for e in json.loads((out / "train_metrics.json").read_text())["log_history"] if "loss" in e]
    assert [e.get("nonfinite_steps", 0) for e in logs] == [0, 1, 1, 1]
    final = load_file(str(out / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in final.values())


def test_k_nonfinite_steps_in_a_row_stop_with_the_last_good_checkpoint(tiny_model, tmp_path, monkeypatch, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", synthetic_pairs(16))
    out = tmp_path / "out"
    nan_at(monkeypatch, {2, 3, 4})
    assert main(argv(tiny_model, data, out, "--max_nonfinite_steps", "2")) == 2
    err = capsys.readouterr().err
    assert "2 optimizer steps in a row (2-3)" in err and "--max_nonfinite_steps 2" in err
    assert f"The last good checkpoint is {out / 'checkpoint-2'}" in err
    assert not (out / "train_metrics.json").exists() and not (out / "checkpoint-3").exists()
    w = load_file(str(out / "checkpoint-2" / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in w.values())


def test_nan_reference_logprob_names_the_row(tiny_model, tokenizer, tmp_path, capsys):
    """A model whose weights give NaN on one token: the precompute stops at the row that holds it."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    model.config.tie_word_embeddings = False  # untie, so the NaN sits in the input embedding only
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    with torch.no_grad():
        model.get_input_embeddings().weight[tokenizer.convert_tokens_to_ids("z")] = float("nan")  # rows with a 'z' only
    bad = tmp_path / "bad_model"
    model.save_pretrained(bad)
    tokenizer.save_pretrained(bad)
    rows = synthetic_pairs(12)  # letters a-h only
    rows[6]["chosen"] = " zz"
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    assert main(argv(bad, data, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert "reference ref_chosen_logps is nan for data row 7" in err, err
