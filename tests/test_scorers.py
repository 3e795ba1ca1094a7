"""Scorer building blocks (templates, truncation, collators, steps, optimiser groups) and training end to end.

The byte tokenizer gives one token per byte (BOS = 1, EOS = 2, pad = 0), so token lists are literal.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from rdo.data.tokenize import Truncation
from rdo.score.scorers import (
    PAPER_TEMPLATE, DifferenceEncoder, ScorerSpec, build_scorer_model, fair_split, head_parameter_names,
    load_scorer, parse_template, resolve_template,
)
from rdo.score.training import DifferenceCollator, RewardCollator, difference_step, reward_step
from scorer_helpers import learnable_pairs

BOS, EOS, PAD = 1, 2, 0


@pytest.fixture(scope="session")
def scorers(trained_scorers):
    return trained_scorers


def b(text: str, tokenizer) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# --- templates and truncation ------------------------------------------------------------------

def test_templates(tokenizer):
    assert resolve_template("paper", tokenizer) == "Query: {x}; Response 1: {y1}; Response 2: {y2}"
    # chat: the paper's comparison as one user turn of the tokenizer's own chat template
    chat = resolve_template("chat", tokenizer)
    assert chat == "<|user|>Query: {x}; Response 1: {y1}; Response 2: {y2}\n<|assistant|>"
    assert resolve_template("{x}|{y1}|{y2}", tokenizer) == "{x}|{y1}|{y2}"
    for bad in ("{x} {y1}", "{x}{y1}{y2}{y2}", "{x}{y1}{z}"):
        with pytest.raises(ValueError, match="exactly once"):
            parse_template(bad)


def test_fair_split():
    assert fair_split(3, 4, 10) == (3, 4)  # both fit
    assert fair_split(2, 20, 10) == (2, 8)  # the short one keeps all of itself
    assert fair_split(20, 2, 10) == (8, 2)  # symmetric
    assert fair_split(20, 30, 10) == (5, 5)  # both long: half each
    assert fair_split(20, 30, 11) == (5, 5)  # an odd token stays unused, so swapping changes nothing


def test_difference_encoder_layout_and_truncation(tokenizer):
    enc = DifferenceEncoder(tokenizer, "{x}|{y1}|{y2}", Truncation(max_length=16, max_prompt_length=4))
    assert enc.overhead == 1 + 2 + 1  # BOS, two '|', EOS
    x, y1, y2 = b("abcdef", tokenizer), b("1234567", tokenizer), b("89", tokenizer)
    # 1. the query keeps its last 4 tokens; 2. room = 16 - 4 - 4 = 8: y2 (2) keeps all, y1 gets 6
    assert enc.assemble(x, y1, y2) == [BOS] + b("cdef|123456|89", tokenizer) + [EOS]
    # the same tokens survive in the other order
    assert enc.assemble(x, y2, y1) == [BOS] + b("cdef|89|123456", tokenizer) + [EOS]
    # both long: half each, never dropping a response
    long1, long2 = b("ABCDEFGHIJ", tokenizer), b("KLMNOPQRST", tokenizer)
    assert enc.assemble(x, long1, long2) == [BOS] + b("cdef|ABCD|KLMN", tokenizer) + [EOS]
    # the paper's template, nothing truncated: exactly the rendered string
    paper = DifferenceEncoder(tokenizer, PAPER_TEMPLATE, Truncation(256, 64))
    assert paper.assemble(b("hi", tokenizer), b(" a", tokenizer), b(" b", tokenizer)) == (
        [BOS] + b("Query: hi; Response 1:  a; Response 2:  b", tokenizer) + [EOS]
    )
    with pytest.raises(ValueError, match="no room for two responses"):
        DifferenceEncoder(tokenizer, PAPER_TEMPLATE, Truncation(48, 20))


def test_spec_roundtrip_and_missing(tmp_path):
    spec = ScorerSpec("difference", 2048, 1024, PAPER_TEMPLATE, "base")
    spec.save(tmp_path)
    assert ScorerSpec.load(tmp_path) == spec
    assert json.loads((tmp_path / "rdo.json").read_text())["kind"] == "difference"
    assert ScorerSpec.load(tmp_path).with_lengths(512, None).max_prompt_length == 1024
    with pytest.raises(FileNotFoundError, match="rdo train-rm"):
        ScorerSpec.load(tmp_path / "nowhere")


# --- collators and steps -----------------------------------------------------------------------

def test_difference_collator_layout(tokenizer):
    enc = DifferenceEncoder(tokenizer, "{x}|{y1}|{y2}", Truncation(64, 16))
    feats = [{"x_ids": b("q", tokenizer), "chosen_ids": b("W", tokenizer), "rejected_ids": b("L", tokenizer), "rdo_row": i}
             for i in range(40)]
    batch = DifferenceCollator(enc, PAD, seed=0)(feats)
    assert batch["input_ids"].shape == (120, 7)  # 3B rows: (y1, y2), (y2, y1), (y_i, y_i)
    text = [tokenizer.decode(r, skip_special_tokens=True) for r in batch["input_ids"].tolist()]
    labels = batch["labels"].tolist()
    assert set(labels) == {0.0, 1.0}  # random order: both labels occur
    for i, label in enumerate(labels):
        assert text[i] == ("q|W|L" if label == 1.0 else "q|L|W")  # label 1 <=> y1 is the chosen response
        assert text[40 + i] == ("q|L|W" if label == 1.0 else "q|W|L")  # the reverse order
        assert text[80 + i] in ("q|W|W", "q|L|L")  # duplication on one of the two responses
    assert {text[80 + i] for i in range(40)} == {"q|W|W", "q|L|L"}


class FixedScores(torch.nn.Module):
    """Stands in for a scorer: returns the given scores for the rows of any batch."""

    def __init__(self, scores):
        super().__init__()
        self.scores = torch.tensor(scores).unsqueeze(-1)  # (N, 1) like a 1-label head

    def forward(self, input_ids, attention_mask, use_cache=False):
        assert input_ids.shape[0] == self.scores.shape[0]
        return SimpleNamespace(logits=self.scores)


def test_difference_step_golden():
    # rows are [f_12; f_21; f_dup]: f_12 = 1.3, f_21 = -0.9, f_dup = 0.2, label 1, beta0 = beta1 = 1
    # bce = log(1 + e^-1.3) = 0.241008; dup = 0.04; rev = (1.3 - 0.9)^2 = 0.16; total 0.441008
    batch = {"input_ids": torch.zeros(3, 2, dtype=torch.long), "attention_mask": torch.ones(3, 2), "labels": torch.tensor([1.0])}
    losses, metrics = difference_step(SimpleNamespace(beta0=1.0, beta1=1.0), FixedScores([1.3, -0.9, 0.2]), batch)
    assert losses.item() == pytest.approx(0.441008, abs=1e-6)
    assert metrics["loss/bce"].item() == pytest.approx(0.241008, abs=1e-6)
    assert metrics["loss/rev"].item() == pytest.approx(0.16, abs=1e-6)
    assert metrics["diff/consistency"].item() == 1.0  # 1.3 > 0 and -0.9 < 0


def test_reward_collator_and_step_with_margin():
    feats = [{"prompt_ids": [1, 5], "chosen_ids": [6, 2], "rejected_ids": [7, 8, 2], "rdo_row": 1, "margin": 0.5}]
    batch = RewardCollator(PAD)(feats)
    assert batch["input_ids"].tolist() == [[1, 5, 6, 2, 0], [1, 5, 7, 8, 2]]  # [chosen; rejected], one forward
    # r_w = 2, r_l = 1, margin 0.5: -log sigmoid(0.5) = log(1 + e^-0.5) = 0.474077
    losses, metrics = reward_step(None, FixedScores([2.0, 1.0]), batch)
    assert losses.item() == pytest.approx(0.474077, abs=1e-6)
    assert metrics["rewards/accuracies"].item() == 1.0


def test_head_parameter_names_and_learning_rates(tiny_model, tokenizer, tmp_path):
    from datasets import Dataset

    from rdo.config import TrainRMConfig
    from rdo.models import add_lora
    from rdo.score.training import ScorerTrainer

    model = build_scorer_model(str(tiny_model), tokenizer)
    assert model.config.pad_token_id == PAD
    assert head_parameter_names(model) == {"score.weight"}
    lora = add_lora(build_scorer_model(str(tiny_model), tokenizer), 4, 8, 0.0, "all-linear", task_type="SEQ_CLS")
    head = head_parameter_names(lora)
    assert head and all("score" in n for n in head)
    assert any(p.requires_grad for n, p in lora.named_parameters() if n in head)  # the head trains under LoRA

    cfg = TrainRMConfig(output_dir=str(tmp_path), model_name_or_path=str(tiny_model), dataset_name="x.jsonl",
                        learning_rate=1e-5, head_learning_rate=1e-4, report_to="none")
    trainer = ScorerTrainer(model=model, args=cfg, train_dataset=Dataset.from_list([{"a": 1}]), step=reward_step)
    groups = trainer.create_optimizer().param_groups
    head_param = model.score.weight
    lrs = {g["lr"] for g in groups if any(p is head_param for p in g["params"])}
    assert lrs == {1e-4}
    assert {g["lr"] for g in groups if not any(p is head_param for p in g["params"])} == {1e-5}


# --- training end to end -----------------------------------------------------------------------

def test_saved_scorers_reload_with_plain_transformers(scorers):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    for name, kind in (("rm", "reward"), ("diff", "difference")):
        folder = scorers[name]
        assert json.loads((folder / "rdo.json").read_text())["kind"] == kind
        model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
        tok = AutoTokenizer.from_pretrained(folder)
        assert model.config.num_labels == 1 and model.config.pad_token_id == tok.pad_token_id
        text = "q1: abcd" if kind == "reward" else "Query: q1:; Response 1:  abcd; Response 2:  wxyz"
        ids = tok(text, return_tensors="pt")["input_ids"]
        ids = torch.cat([ids, torch.tensor([[tok.eos_token_id]])], dim=1)
        with torch.no_grad():
            plain = model(input_ids=ids).logits[0, 0].item()
        assert load_scorer(str(folder), device="cpu").forward([ids[0].tolist()]).item() == pytest.approx(plain, abs=1e-5)


def test_scorers_learn_above_chance(scorers, tmp_path):
    from rdo.cli import main

    out = {}
    for name in ("rm", "diff"):
        out[name] = tmp_path / f"{name}.json"
        assert main(["eval", "accuracy", "--scorer", str(scorers[name]), "--dataset_name", str(scorers["test"]),
                     "--output", str(out[name]), "--bootstrap", "200"]) == 0
    rm, diff = (json.loads(out[n].read_text()) for n in ("rm", "diff"))
    assert rm["n_pairs"] == diff["n_pairs"] == 32
    assert rm["accuracy"] >= 0.8, rm  # chance is 0.5 on held-out pairs
    assert diff["accuracy"] >= 0.8, diff
    assert rm["ci95"][0] > 0.5
    assert diff["accuracy_single_pass"] >= 0.8 and diff["position_consistency"] >= 0.8, diff  # not just the symmetrised R
    assert sum(b["n"] for b in rm["bins"]) == 32


def test_reverse_regulariser_drives_sum_to_zero(tiny_model, tokenizer):
    """Pairs always shown chosen-first invite the shortcut "f > 0 whatever the order". BCE alone takes
    it, so f(x,a,b) + f(x,b,a) grows; the reverse term β1 (f_12 + f_21)^2 keeps the sum near 0."""
    from rdo.score.training import difference_features

    enc = DifferenceEncoder(tokenizer, "{x}|{y1}|{y2}", Truncation(64, 16))
    train_set = difference_features([{**r, "rdo_row": i} for i, r in enumerate(learnable_pairs(8, seed=3))], enc)
    held_out = difference_features([{**r, "rdo_row": i} for i, r in enumerate(learnable_pairs(8, seed=4))], enc)
    always_chosen_first = SimpleNamespace(random=lambda: 0.9)  # never swap: label 1 every time

    def reverse_sum_sq(model) -> float:
        batch = DifferenceCollator(enc, PAD, seed=0)(held_out)
        with torch.no_grad():
            f_12, f_21, _ = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0].chunk(3)
        return ((f_12 + f_21) ** 2).mean().item()

    def train(beta1: float) -> float:
        torch.manual_seed(0)
        model = build_scorer_model(str(tiny_model), tokenizer)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        collate = DifferenceCollator(enc, PAD)
        collate.rng = always_chosen_first
        for _ in range(12):
            losses, _ = difference_step(SimpleNamespace(beta0=0.0, beta1=beta1), model, collate(train_set))
            losses.mean().backward()
            opt.step()
            opt.zero_grad()
        return reverse_sum_sq(model.eval())

    with_rev, without = train(1.0), train(0.0)
    assert without > 1.0, without  # the shortcut: both orders score high
    assert with_rev < without / 10, (with_rev, without)


def test_lora_chat_template_on_conversational_data_and_ranked_training(tiny_model, tmp_path):
    from conftest import write_jsonl
    from rdo.cli import main

    def conv(r):
        return {"prompt": [{"role": "user", "content": r["prompt"]}], "chosen": [{"role": "assistant", "content": r["chosen"]}],
                "rejected": [{"role": "assistant", "content": r["rejected"]}]}

    data = write_jsonl(tmp_path / "conv.jsonl", [conv(r) for r in learnable_pairs(8, seed=11)])
    diff = tmp_path / "diff"
    common = ["--model_name_or_path", str(tiny_model), "--report_to", "none", "--disable_tqdm", "true",
              "--per_device_train_batch_size", "4", "--max_steps", "2"]
    assert main(["train-diff", *common, "--dataset_name", str(data), "--output_dir", str(diff), "--template", "chat",
                 "--lora_r", "4", "--max_length", "256", "--max_prompt_length", "64"]) == 0
    spec = json.loads((diff / "rdo.json").read_text())
    assert spec["template"] == "<|user|>Query: {x}; Response 1: {y1}; Response 2: {y2}\n<|assistant|>"
    assert (diff / "adapter").is_dir() and not (diff / "adapter_config.json").exists()  # LoRA merged into the saved model
    assert main(["score", "--scorer", str(diff), "--dataset_name", str(data), "--output", str(tmp_path / "s.jsonl")]) == 0
    scored = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert len(scored) == 8 and scored[0]["prompt"] == conv(learnable_pairs(8, seed=11)[0])["prompt"]  # messages unchanged

    from scorer_helpers import ranked_rows  # ranked rows train a reward model on every pair with different scores

    ranked = write_jsonl(tmp_path / "ranked.jsonl", ranked_rows(4, seed=12))
    assert main(["train-rm", *common, "--dataset_name", str(ranked), "--output_dir", str(tmp_path / "rm")]) == 0
    metrics = json.loads((tmp_path / "rm" / "train_metrics.json").read_text())
    assert metrics["data"]["pairs"] == 4 * 3


def test_reward_features_read_the_margin_column(tokenizer):
    from rdo.config import TrainRMConfig
    from rdo.data import DataError, SkipReport
    from rdo.score.training import reward_features

    cfg = TrainRMConfig(output_dir="unused", model_name_or_path="m", dataset_name="d.jsonl", report_to="none",
                        max_length=32, max_prompt_length=8)
    recs = [{"prompt": "q", "chosen": " a", "rejected": " b", "rdo_row": 1, "margin": 0.5},
            {"prompt": "q", "chosen": " c", "rejected": " d", "rdo_row": 2, "margin": 2}]
    feats = reward_features(recs, tokenizer, cfg, "d.jsonl", SkipReport())
    assert [f["margin"] for f in feats] == [0.5, 2.0]
    assert feats[0]["prompt_ids"] == [BOS] + b("q", tokenizer) and feats[0]["chosen_ids"] == b(" a", tokenizer) + [EOS]
    with pytest.raises(DataError, match="row 2, field 'margin'"):
        reward_features([recs[0], {**recs[1], "margin": None}], tokenizer, cfg, "d.jsonl", SkipReport())
    assert "margin" not in reward_features([{k: v for k, v in recs[0].items() if k != "margin"}], tokenizer, cfg, "d.jsonl", SkipReport())[0]
