"""`rdo train-rm` / `rdo train-diff` options through the CLI, and the head's learning rate under wrapping."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch

from conftest import write_jsonl
from rdo.cli import main
from scorer_helpers import learnable_pairs


def train(command: str, tiny_model, data, out, *flags: str) -> dict:
    argv = [command, "--model_name_or_path", str(tiny_model), "--dataset_name", str(data), "--output_dir", str(out),
            "--use_cpu", "true", "--report_to", "none", "--disable_tqdm", "true", "--logging_steps", "1", *flags]
    assert main(argv) == 0
    return json.loads((out / "train_metrics.json").read_text())


def test_head_learning_rate_survives_a_wrapper_that_renames_parameters(tiny_model, tokenizer, tmp_path):
    """FSDP prefixes every name (`_fsdp_wrapped_module.`): by name, every parameter looked like the head."""
    from datasets import Dataset

    from rdo.config import TrainRMConfig
    from rdo.score.scorers import build_scorer_model
    from rdo.score.training import ScorerTrainer, reward_step

    class Wrapped(torch.nn.Module):  # what an engine's wrapper looks like from outside: same modules, new names
        def __init__(self, inner):
            super().__init__()
            self._fsdp_wrapped_module = inner

    model = build_scorer_model(str(tiny_model), tokenizer)
    cfg = TrainRMConfig(output_dir=str(tmp_path), model_name_or_path=str(tiny_model), dataset_name="x.jsonl",
                        learning_rate=1e-5, head_learning_rate=1e-4, report_to="none", use_cpu=True)
    trainer = ScorerTrainer(model=model, args=cfg, train_dataset=Dataset.from_list([{"a": 1}]), step=reward_step)
    wrapped = Wrapped(model)
    assert all(n.startswith("_fsdp_wrapped_module.") for n, _ in wrapped.named_parameters())
    groups = trainer.create_optimizer(wrapped).param_groups
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert lr_of[id(model.score.weight)] == 1e-4
    backbone = [p for p in model.model.parameters()]
    assert backbone and {lr_of[id(p)] for p in backbone} == {1e-5}
    assert len(lr_of) == sum(1 for _ in model.parameters())  # every parameter in exactly one group


def test_disable_dropout(tiny_model, tmp_path, caplog):
    """Llama keeps attention dropout as a float, not an nn.Dropout: TRL-style zeroing of modules misses it."""
    from transformers import AutoModelForCausalLM

    from rdo.models import disable_dropout

    model = AutoModelForCausalLM.from_pretrained(tiny_model, attention_dropout=0.5).train()
    ids = torch.tensor([[1, 50, 60, 70, 80, 90]])
    torch.manual_seed(0)
    assert not torch.equal(model(ids).logits, model(ids).logits)  # dropout is live in train mode
    assert disable_dropout(model) == 2  # one per layer
    assert torch.equal(model(ids).logits, model.eval()(ids).logits)

    # the scorers turn it off too (the same default as rdo align)
    folder = tmp_path / "dropout-model"
    AutoModelForCausalLM.from_pretrained(tiny_model, attention_dropout=0.1).save_pretrained(folder)
    from rdo.tiny import byte_tokenizer

    byte_tokenizer().save_pretrained(folder)
    data = write_jsonl(tmp_path / "train.jsonl", learnable_pairs(4, seed=1))
    with caplog.at_level(logging.INFO, logger="rdo.score.training"):
        train("train-rm", folder, data, tmp_path / "rm", "--max_steps", "1")
    assert "turned off 2 dropout(s) (--disable_dropout)" in caplog.text


def test_margin_column_enters_the_loss(tiny_model, tmp_path):
    """One pair, one step: the logged loss is -log sigmoid(r_w - r_l - m), with r_w - r_l logged beside it."""
    row = dict(learnable_pairs(1, seed=3)[0], my_margin=1.5)
    data = write_jsonl(tmp_path / "one.jsonl", [row])
    flags = ("--max_steps", "1", "--per_device_train_batch_size", "1")
    step = train("train-rm", tiny_model, data, tmp_path / "m", "--margin_column", "my_margin", *flags)["log_history"][0]
    delta = step["rewards/margins"]
    assert step["loss"] == pytest.approx(math.log1p(math.exp(-(delta - 1.5))), rel=1e-5)
    plain = train("train-rm", tiny_model, data, tmp_path / "p", *flags)["log_history"][0]  # no "margin" column: m = 0
    assert plain["rewards/margins"] == pytest.approx(delta, rel=1e-6)  # same initial head (seeded)
    assert plain["loss"] == pytest.approx(math.log1p(math.exp(-delta)), rel=1e-5)


def test_train_rm_eval_dataset_loss_matches_the_saved_model(tiny_model, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from rdo.config import TrainRMConfig
    from rdo.data import load_records
    from rdo.models import load_tokenizer
    from rdo.score.training import RewardCollator, reward_features

    train_file = write_jsonl(tmp_path / "train.jsonl", learnable_pairs(16, seed=1))
    held_out = write_jsonl(tmp_path / "test.jsonl", learnable_pairs(6, seed=2))
    out = tmp_path / "rm"
    metrics = train("train-rm", tiny_model, train_file, out, "--eval_dataset_name", str(held_out), "--num_train_epochs", "2",
                    "--learning_rate", "1e-3", "--head_learning_rate", "1e-2", "--per_device_train_batch_size", "4")
    assert metrics["data"]["eval"]["pairs"] == 6
    assert sum("eval_loss" in h for h in metrics["log_history"]) >= 2  # each epoch, and at the end

    # the final eval loss, recomputed from the saved model on the held-out pairs
    tok = load_tokenizer(str(out))
    cfg = TrainRMConfig(output_dir=str(tmp_path / "x"), model_name_or_path=str(tiny_model), dataset_name=str(held_out))
    loaded = load_records(str(held_out), tokenizer=tok)
    features = reward_features(loaded.records, tok, cfg, str(held_out), loaded.skips)
    batch = RewardCollator(tok.pad_token_id)(features)
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    with torch.no_grad():
        r = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0]
    chosen, rejected = r.chunk(2)
    expected = torch.nn.functional.softplus(-(chosen - rejected)).mean().item()
    assert metrics["eval"]["eval_loss"] == pytest.approx(expected, rel=1e-4)
    assert metrics["eval"]["eval_rewards/accuracies"] == pytest.approx((chosen > rejected).float().mean().item())


def test_train_diff_custom_template_and_eval_dataset(tiny_model, tmp_path):
    from rdo.score.scorers import load_scorer

    train_file = write_jsonl(tmp_path / "train.jsonl", learnable_pairs(8, seed=1))
    held_out = write_jsonl(tmp_path / "test.jsonl", learnable_pairs(4, seed=2))
    out = tmp_path / "diff"
    template = "Q={x} | first={y1} | second={y2}"
    metrics = train("train-diff", tiny_model, train_file, out, "--template", template, "--eval_dataset_name", str(held_out),
                    "--max_steps", "2", "--per_device_train_batch_size", "4", "--max_length", "128", "--max_prompt_length", "16",
                    "--seed", "5")
    assert metrics["data"]["eval"]["pairs"] == 4
    ev = metrics["eval"]
    assert ev["eval_loss"] > 0
    # bce + beta0 dup + beta1 rev is the eval loss (beta0 = beta1 = 0.1), averaged over the same pairs
    assert ev["eval_loss"] == pytest.approx(ev["eval_loss/bce"] + 0.1 * ev["eval_loss/dup"] + 0.1 * ev["eval_loss/rev"], rel=1e-4)
    assert json.loads((out / "rdo.json").read_text())["template"] == template
    scorer = load_scorer(str(out), device="cpu")
    enc = scorer.diff_encoder
    ids = enc.assemble(enc.ids("q1:"), enc.ids(" ab"), enc.ids(" wx"))
    assert scorer.tok.decode(ids) == "<s>Q=q1: | first= ab | second= wx</s>"
    # the eval accuracy, recomputed one pair at a time from the saved model: the eval collator (seeded by
    # --seed) shows each pair in a random order, label 1 when the chosen response comes first
    import random

    rng, correct = random.Random(5), []
    for row in learnable_pairs(4, seed=2):
        swap = rng.random() < 0.5
        rng.random()  # the duplicate's draw
        y1, y2 = (row["rejected"], row["chosen"]) if swap else (row["chosen"], row["rejected"])
        with torch.no_grad():
            f = scorer.model(input_ids=torch.tensor([enc.assemble(enc.ids(row["prompt"]), enc.ids(y1), enc.ids(y2))])).logits[0, 0]
        correct.append(float((f > 0).item() == (not swap)))
    assert ev["eval_diff/accuracies"] == pytest.approx(sum(correct) / 4)
