"""`rdo align --method odpo|mmpo|rpo`: each pair's R reaches the loss, the neutral settings train exactly
like DPO (loss and gradients), and each method moves the policy the way its R says."""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import pytest
import torch

from rdo.core.methods.pairwise import dpo_step, pair_reference
from rdo.core.methods.reward_aware import mmpo_step, odpo_step, rpo_step
from rdo.data.collate import PairCollator
from rdo.data.tokenize import Encoder, Truncation

from conftest import run_align, step_logs, synthetic_pairs, write_jsonl


def _batch(tokenizer, rows):
    enc = Encoder(tokenizer, Truncation(64, 32))
    features = [{**enc.encode({**r, "rdo_row": i}, "pair", "t"), "rdo_weight": 1.0 + i / 4, "reward_diff": r["rdo_reward_diff"]}
                for i, r in enumerate(rows)]
    return PairCollator(tokenizer.pad_token_id)(features)


def _loss_and_grads(step, args, model, ref_model, batch):
    model.zero_grad(set_to_none=True)
    out = step(args, model, batch, lambda b: pair_reference(ref_model, b))
    loss = (out.weights * out.losses).sum() / out.losses.shape[0]  # the trainer's reduction
    loss.backward()
    return out.losses.detach(), loss.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("step,neutral", [
    (odpo_step, {"odpo_offset_scale": 0.0}),
    (mmpo_step, {"mmpo_gamma": math.inf}),
    (rpo_step, {"rpo_variant": "bwd_kl", "rpo_eta": math.inf}),
])
def test_neutral_setting_is_one_dpo_step_exactly(tiny_model, tokenizer, step, neutral):
    """Per-pair losses, the weighted loss and every gradient equal DPO's bit for bit (R > 0 on every pair)."""
    from rdo.models import load_causal_lm

    torch.manual_seed(0)
    model = load_causal_lm(str(tiny_model), "float32")
    with torch.no_grad():  # move the policy off the reference so h != 0 and the test can tell losses apart
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ref_model = load_causal_lm(str(tiny_model), "float32").eval()
    rows = [dict(r, rdo_reward_diff=abs(r["rdo_reward_diff"]) + 0.1) for r in synthetic_pairs(6, seed=3)]
    batch = _batch(tokenizer, rows)
    dpo = _loss_and_grads(dpo_step, SimpleNamespace(beta=0.3, label_smoothing=0.0), model, ref_model, batch)
    other = _loss_and_grads(step, SimpleNamespace(beta=0.3, **neutral), model, ref_model, batch)
    assert torch.equal(other[0], dpo[0]) and torch.equal(other[1], dpo[1])
    assert all(torch.equal(a, b) for a, b in zip(other[2], dpo[2]))
    assert len(set(dpo[0].tolist())) == 6  # six different pairs, not a degenerate batch
    # away from neutral the same batch gives another loss: the option is read
    away = {"odpo_offset_scale": 1.0} if step is odpo_step else {"mmpo_gamma": 1.0} if step is mmpo_step else {"rpo_variant": "bwd_kl", "rpo_eta": 1.0}
    assert not torch.equal(_loss_and_grads(step, SimpleNamespace(beta=0.3, **away), model, ref_model, batch)[1], dpo[1])


def test_odpo_at_zero_offset_trains_like_dpo_with_the_weight(tiny_model, tmp_path):
    """Through the CLI, with α = 0.5: the R^α weight composes, and zero offset is DPO step for step."""
    data = write_jsonl(tmp_path / "pairs.jsonl", synthetic_pairs(16))
    flags = ("--num_train_epochs", "1", "--alpha", "0.5")
    dpo = step_logs(run_align(tiny_model, data, tmp_path / "dpo", "dpo", *flags))
    odpo = step_logs(run_align(tiny_model, data, tmp_path / "odpo", "odpo", "--odpo_offset_scale", "0", *flags))
    assert [e["loss"] for e in odpo] == [e["loss"] for e in dpo]
    assert [e["weights/mean"] for e in odpo] == [e["weights/mean"] for e in dpo] and len({e["weights/mean"] for e in dpo}) > 1


def _constant_r(tmp_path, r: float):
    return write_jsonl(tmp_path / f"r{r}.jsonl", [dict(row, rdo_reward_diff=r) for row in synthetic_pairs(16)])


TRAIN = ("--num_train_epochs", "3", "--alpha", "0")


def test_odpo_offset_pushes_the_margin_past_dpos(tiny_model, tmp_path):
    data = _constant_r(tmp_path, 3.0)
    dpo = step_logs(run_align(tiny_model, data, tmp_path / "dpo", "dpo", *TRAIN))
    odpo = step_logs(run_align(tiny_model, data, tmp_path / "odpo", "odpo", "--odpo_offset_scale", "2", *TRAIN))
    assert odpo[0]["odpo/offset"] == pytest.approx(2 * math.log(4.0), rel=1e-6)
    # the first step is ln(1 + e^offset) (h = 0 at the reference): a wrong sign would give ln(1 + e^-offset)
    assert odpo[0]["loss/unweighted"] == pytest.approx(math.log1p(16.0), rel=1e-4)
    assert odpo[-1]["rewards/margins"] > dpo[-1]["rewards/margins"] > 0


@pytest.mark.parametrize("method,flags", [
    ("mmpo", ("--mmpo_gamma", "2")),
    ("rpo", ("--rpo_variant", "sq")),
    ("rpo", ("--rpo_variant", "bwd_kl")),
    ("rpo", ("--rpo_variant", "fwd_kl")),
])
def test_r_below_zero_teaches_the_policy_to_prefer_rejected(tiny_model, tmp_path, method, flags):
    """Every pair has R = -3: the scorer says rejected is better, and these methods believe it (DPO would not)."""
    logs = step_logs(run_align(tiny_model, _constant_r(tmp_path, -3.0), tmp_path / "o", method, *flags, *TRAIN))
    assert logs[-1]["rewards/margins"] < -0.05
    assert logs[-1]["rewards/accuracies"] < 0.5
    if method == "mmpo":
        assert logs[0]["mmpo/label"] == pytest.approx(1 / (1 + math.exp(6.0)), rel=1e-4)
    if flags[-1] == "sq":  # step one at h = 0: (0 - eta * R)^2 = 9
        assert logs[0]["loss/unweighted"] == pytest.approx(9.0, rel=1e-5)


def test_the_methods_need_r_at_alpha_zero(tiny_model, tmp_path, capsys):
    from rdo.cli import main

    data = write_jsonl(tmp_path / "plain.jsonl", synthetic_pairs(4, with_coef=False))
    code = main(["align", "--model_name_or_path", str(tiny_model), "--dataset_name", str(data), "--output_dir",
                 str(tmp_path / "o"), "--method", "mmpo", "--alpha", "0", "--use_cpu", "true", "--report_to", "none"])
    assert code == 2
    err = capsys.readouterr().err
    assert "row 1, field 'rdo_reward_diff': missing coefficient" in err and "--score_chosen_column" in err


def test_align_help_lists_the_methods(capsys):
    from rdo.cli import main

    with pytest.raises(SystemExit):
        main(["align", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--method {dpo,ipo,rrhf,kto,simpo,odpo,mmpo,rpo}" in text
    assert "--rpo_variant {sq,bwd_kl,fwd_kl}" in text


def test_resume_checks_r_for_methods_that_read_it():
    """A checkpoint of odpo/mmpo/rpo refuses data whose R changed even when every weight is 1 (α = 0)."""
    from rdo.train.resume import weights_digest

    rows = [{"rdo_row": 1, "rdo_weight": 1.0}, {"rdo_row": 2, "rdo_weight": 1.0}]
    with_r = [dict(r, reward_diff=x) for r, x in zip(rows, (0.5, 2.0))]
    assert weights_digest(with_r) != weights_digest([dict(r, reward_diff=x) for r, x in zip(rows, (0.5, 2.5))])
    assert weights_digest(with_r) == weights_digest([dict(r) for r in with_r])
    assert weights_digest(rows) != weights_digest(with_r)
