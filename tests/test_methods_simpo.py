"""SimPO+rc in `rdo align` (reference-free, averaged log-probs), the per-method config fields, and
the trainer's check that a batch holds the fields its method declares."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from rdo.config import AlignConfig
from rdo.data.collate import PairCollator
from rdo.data.tokenize import Encoder, Truncation
from rdo.core.losses import simpo_loss
from rdo.core.methods import get_method
from rdo.core.methods.pairwise import simpo_step
from rdo.train.trainer import RDOTrainer

from conftest import run_align, step_logs, synthetic_pairs, write_jsonl


def _avg_logp_alone(model, prompt, response) -> torch.Tensor:
    ids = torch.tensor([prompt + response])
    logprobs = torch.log_softmax(model(input_ids=ids).logits[0, :-1], dim=-1)
    positions = torch.arange(len(prompt) - 1, len(prompt) + len(response) - 1)
    return logprobs[positions, torch.tensor(response)].mean()


def test_step_matches_pairs_computed_alone(tiny_model, tokenizer):
    from rdo.models import load_causal_lm

    model = load_causal_lm(str(tiny_model), "float32").eval()
    enc = Encoder(tokenizer, Truncation(64, 32))
    features = [{**enc.encode({**r, "rdo_row": i}, "pair", "t"), "rdo_weight": float(i)}
                for i, r in enumerate(synthetic_pairs(3, seed=4), start=1)]
    out = simpo_step(SimpleNamespace(beta=2.0, simpo_gamma=0.5, label_smoothing=0.0), model,
                     PairCollator(tokenizer.pad_token_id)(features), reference=None)
    with torch.no_grad():
        chosen = torch.stack([_avg_logp_alone(model, f["prompt_ids"], f["chosen_ids"]) for f in features])
        rejected = torch.stack([_avg_logp_alone(model, f["prompt_ids"], f["rejected_ids"]) for f in features])
    expected, _, _ = simpo_loss(chosen, rejected, beta=2.0, gamma=0.5)
    torch.testing.assert_close(out.losses.detach(), expected, atol=1e-5, rtol=1e-5)
    assert out.weights.tolist() == [1.0, 2.0, 3.0]
    torch.testing.assert_close(out.metrics["rewards/margins"], 2.0 * (chosen - rejected), atol=1e-5, rtol=1e-5)


def test_simpo_trains_without_a_reference(tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "pairs.jsonl", synthetic_pairs(24))
    metrics = run_align(tiny_model, data, tmp_path / "out", "simpo", "--num_train_epochs", "4")
    logs = step_logs(metrics)
    assert len(logs) == 24
    for key in ("rewards/margins", "rewards/accuracies", "rewards/chosen", "logps/chosen", "weights/mean"):
        assert all(key in e for e in logs), key
    first, last = logs[:6], logs[-6:]
    mean = lambda entries, key: sum(e[key] for e in entries) / len(entries)  # noqa: E731
    assert mean(last, "loss") < mean(first, "loss")
    assert mean(last, "rewards/margins") > mean(first, "rewards/margins")
    assert not list(tmp_path.glob("rdo-ref-logps-*.pt"))  # no reference model, nothing precomputed
    assert "reference_cache" not in metrics["data"]


def test_alpha_zero_is_plain_simpo_step_by_step(tiny_model, tmp_path):
    with_coef = synthetic_pairs(12)
    without = [{k: v for k, v in r.items() if k != "rdo_reward_diff"} for r in with_coef]
    flags = ("--num_train_epochs", "2")
    plain = step_logs(run_align(tiny_model, write_jsonl(tmp_path / "a.jsonl", without), tmp_path / "a", "simpo", "--alpha", "0", *flags))
    zero = step_logs(run_align(tiny_model, write_jsonl(tmp_path / "b.jsonl", with_coef), tmp_path / "b", "simpo", "--alpha", "0", *flags))
    rc = step_logs(run_align(tiny_model, tmp_path / "b.jsonl", tmp_path / "c", "simpo", "--alpha", "1", *flags))
    assert [e["loss"] for e in zero] == [e["loss"] for e in plain]  # exactly
    assert [e["loss"] for e in rc] != [e["loss"] for e in plain]


# ---------------------------------------------------------------------------------------------
# Config and trainer plumbing shared by the methods
# ---------------------------------------------------------------------------------------------


def _cfg(tmp_path, **kw):
    return AlignConfig(output_dir=str(tmp_path), model_name_or_path="m", dataset_name="d.jsonl", use_cpu=True,
                       report_to="none", **kw)


@pytest.mark.parametrize("method,beta", [("dpo", 0.1), ("ipo", 0.1), ("kto", 0.1), ("simpo", 2.0), ("rrhf", None),
                                         ("odpo", 0.1), ("mmpo", 0.1), ("rpo", 0.1)])
def test_beta_default_depends_on_the_method(tmp_path, method, beta):
    assert _cfg(tmp_path, method=method).beta == beta
    if beta is not None:
        assert _cfg(tmp_path, method=method, beta=0.7).beta == 0.7


@pytest.mark.parametrize("method,field,value,message", [
    ("rrhf", "rrhf_length_penalty", -1.0, "rrhf_length_penalty -1.0 must be >= 0"),
    ("rrhf", "rrhf_sft_weight", -0.1, "rrhf_sft_weight -0.1 must be >= 0"),
    ("kto", "kto_desirable_weight", 0.0, "must be > 0"),
    ("kto", "kto_undesirable_weight", -1.0, "must be > 0"),
    ("odpo", "odpo_offset_scale", -0.5, "odpo_offset_scale -0.5 must be a finite number >= 0"),
    ("mmpo", "mmpo_gamma", 0.0, "mmpo_gamma 0.0 must be > 0"),
    ("rpo", "rpo_eta", float("inf"), "finite with --rpo_variant sq"),  # run with rpo_variant=sq (see below)
])
def test_method_fields_are_validated(tmp_path, method, field, value, message):
    with pytest.raises(ValueError, match=message):
        _cfg(tmp_path, method=method, **({field: value} | ({"rpo_variant": "sq"} if field == "rpo_eta" else {})))


# a valid, non-default value of every method-specific option
SET_VALUES = {"beta": 0.3, "label_smoothing": 0.1, "ipo_average_log_ratios": False, "simpo_gamma": 1.0,
              "rrhf_length_penalty": 0.5, "rrhf_sft_weight": 0.5, "kto_desirable_weight": 1.2,
              "kto_undesirable_weight": 0.9, "odpo_offset_scale": 0.5, "mmpo_gamma": 2.0, "rpo_variant": "sq",
              "rpo_eta": 2.0, "precompute_ref": False, "ref_model_name_or_path": "ref", "ref_cache_dir": "c"}


def test_every_method_refuses_the_options_it_does_not_read_and_accepts_its_own(tmp_path):
    """label_smoothing was silently ignored by IPO, KTO and RRHF; now each option is read or refused."""
    from rdo.core.methods import METHOD_OPTIONS, REGISTRY

    assert set(METHOD_OPTIONS) == set(SET_VALUES)
    refused = {}
    for name, method in REGISTRY.items():
        for option, value in SET_VALUES.items():
            if option in method.reads:
                assert getattr(_cfg(tmp_path, method=name, **{option: value}), option) == value
            else:
                with pytest.raises(ValueError, match=rf"--method {name} does not use --{option} \(read by "):
                    _cfg(tmp_path, method=name, **{option: value})
                refused.setdefault(option, []).append(name)
    assert sorted(refused["label_smoothing"]) == ["ipo", "kto", "mmpo", "odpo", "rpo", "rrhf"]  # the three, and the R-reading losses
    assert refused["beta"] == ["rrhf"] and sorted(refused["ref_model_name_or_path"]) == ["rrhf", "simpo"]
    assert "ipo_average_log_ratios" in refused and "simpo_gamma" in refused


def test_an_unused_option_is_one_line_from_the_cli(capsys, tmp_path):
    from rdo.cli import main

    code = main(["align", "--model_name_or_path", "m", "--dataset_name", "d.jsonl", "--output_dir", str(tmp_path),
                 "--method", "ipo", "--label_smoothing", "0.1"])
    assert code == 2
    assert "--method ipo does not use --label_smoothing (read by dpo, simpo)" in capsys.readouterr().err


def test_method_data_kinds_are_checked(tiny_model, tmp_path, capsys):
    from rdo.cli import main

    data = write_jsonl(tmp_path / "ranked.jsonl", [{"prompt": "q", "responses": ["a", "b"], "scores": [0, 1]}])
    code = main(["align", "--model_name_or_path", str(tiny_model), "--dataset_name", str(data), "--output_dir",
                 str(tmp_path / "o"), "--method", "simpo", "--alpha", "0", "--use_cpu", "true", "--report_to", "none"])
    assert code == 2
    assert "cannot train --method simpo, which needs pair rows" in capsys.readouterr().err


def test_trainer_refuses_a_batch_without_the_declared_fields():
    trainer = SimpleNamespace(method=get_method("simpo"))
    with pytest.raises(RuntimeError, match=r"simpo: the batch lacks \['loss_mask', 'rdo_weight'\]"):
        RDOTrainer.compute_loss(trainer, None, {"input_ids": 0, "attention_mask": 0})
