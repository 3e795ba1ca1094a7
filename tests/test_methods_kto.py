"""KTO+rc in `rdo align`: the KL reference point z (by hand, against TRL 1.16, across processes), the
step's row layout, pairs as two weighted examples, odd and size-1 batches, and alpha = 0 = plain KTO."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from rdo.train.align import prepare_features
from rdo.config import AlignConfig
from rdo.data.collate import UnpairedCollator
from rdo.data.convert import assign_kl_completions
from rdo.data.tokenize import Encoder, Truncation
from rdo.core.losses import kto_loss
from rdo.core.methods import get_method
from rdo.core.methods.kto import kl_reference_point, kto_step

from conftest import run_align, step_logs, synthetic_pairs, synthetic_unpaired, write_jsonl
from test_losses import _bare, _FakeModel, _sequences, trl  # noqa: F401  (trl is a fixture)

# ---------------------------------------------------------------------------------------------
# The KL reference point z
# ---------------------------------------------------------------------------------------------


def test_kl_reference_point_by_hand():
    # log pi(y'|x) - log pi_ref(y'|x) per mismatched pair: [-5 + 5.5, -7 + 6, -6 + 6.3] = [0.5, -1, 0.3]
    # z = (0.5 - 1 + 0.3) / 3 = -0.2 / 3 = -0.0666667 (kto_loss then clamps it to 0)
    policy = torch.tensor([-5.0, -7.0, -6.0], dtype=torch.float64, requires_grad=True)
    reference = torch.tensor([-5.5, -6.0, -6.3], dtype=torch.float64)
    z = kl_reference_point(policy, reference)
    assert z.item() == pytest.approx(-0.2 / 3, abs=1e-12)
    assert not z.requires_grad  # z is a constant of the loss
    # [-4 + 5, -6 + 6.5] = [1, 0.5] -> z = 0.75; desirable log-ratio 1, beta 1: 1 - sigmoid(0.25) = 0.437823
    z = kl_reference_point(torch.tensor([-4.0, -6.0]), torch.tensor([-5.0, -6.5]))
    assert z.item() == pytest.approx(0.75)
    losses, _ = kto_loss(torch.tensor([-1.0]), torch.tensor([-2.0]), z, torch.tensor([True]), beta=1.0)
    assert losses.item() == pytest.approx(0.437823, abs=1e-6)


@pytest.mark.parametrize("kl_offset", [0.7, -0.7], ids=["kl_positive", "kl_clamped_to_zero"])
def test_kl_reference_point_matches_trl(trl, kl_offset):  # noqa: F811
    # TRL 1.16's KTOTrainer._compute_loss logs the z it used as metric "kl"; same tensors, same z.
    gen = torch.Generator().manual_seed(7)
    n = 6
    input_ids, attention_mask, completion_mask, per_token = _sequences(gen, n)
    kl_ids, kl_attention_mask, kl_completion_mask, kl_per_token = _sequences(gen, n)
    kl_logps = kl_per_token.detach().sum(dim=1)
    ref_kl_logps = kl_logps - kl_offset + 0.1 * torch.randn(n, generator=gen, dtype=torch.float64)
    trainer = _bare(trl.KTOTrainer, _FakeModel([(input_ids, per_token), (kl_ids, kl_per_token)]), beta=0.1,
                    loss_type="kto", calculate_KL=True, desirable_weight=1.0, undesirable_weight=1.0)
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask, completion_mask=completion_mask,
                  label=torch.tensor([True, False] * 3), KL_input_ids=kl_ids, KL_attention_mask=kl_attention_mask,
                  KL_completion_mask=kl_completion_mask, ref_logps=per_token.detach().sum(1), ref_KL_logps=ref_kl_logps)
    trainer._compute_loss(trainer.model, inputs, return_outputs=False)
    ours = kl_reference_point(kl_logps, ref_kl_logps).clamp(min=0)
    assert trainer._metrics["eval"]["kl"][-1] == pytest.approx(ours.item(), abs=1e-12)


Z_ON_RANK = """
import sys, torch
from rdo.core.methods.kto import kl_reference_point
rank = int(sys.argv[1])
torch.distributed.init_process_group("gloo", init_method="file://" + sys.argv[2], rank=rank, world_size=2)
# rank 0: diffs [1, 2] (mean 1.5); rank 1: diffs [-0.5, 0.5, 3] (mean 1.0) -> z = 1.25 on both
diffs = [torch.tensor([1.0, 2.0]), torch.tensor([-0.5, 0.5, 3.0])][rank]
print(kl_reference_point(diffs, torch.zeros_like(diffs)).item())
torch.distributed.destroy_process_group()
"""


@pytest.mark.multiproc
def test_kl_reference_point_is_averaged_across_processes(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [subprocess.Popen([sys.executable, "-c", Z_ON_RANK, str(rank), str(tmp_path / "init")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert [float(out.split()[-1]) for out, _ in outs] == [1.25, 1.25]


# ---------------------------------------------------------------------------------------------
# The step: rows [0, B) are trained on, rows [B, 2B) only feed z
# ---------------------------------------------------------------------------------------------


def _seq_logp_alone(model, prompt, completion) -> torch.Tensor:
    ids = torch.tensor([prompt + completion])
    logprobs = torch.log_softmax(model(input_ids=ids).logits[0, :-1], dim=-1)
    positions = torch.arange(len(prompt) - 1, len(prompt) + len(completion) - 1)
    return logprobs[positions, torch.tensor(completion)].sum()


def test_step_matches_examples_computed_alone(tiny_model, tokenizer):
    from rdo.models import load_causal_lm

    model = load_causal_lm(str(tiny_model), "float32").eval()
    enc = Encoder(tokenizer, Truncation(64, 32))
    features = [{**enc.encode({**r, "rdo_row": i}, "unpaired", "t"), "rdo_weight": 0.5 + i / 10}
                for i, r in enumerate(synthetic_unpaired(5, seed=3), start=1)]
    features = assign_kl_completions(features, seed=0)
    batch = UnpairedCollator(tokenizer.pad_token_id)(features)  # B = 5, odd
    gen = torch.Generator().manual_seed(0)
    ref = {"ref_logps": -30 * torch.rand(5, generator=gen), "ref_kl_logps": -30 * torch.rand(5, generator=gen)}
    args = SimpleNamespace(beta=0.5, kto_desirable_weight=1.3, kto_undesirable_weight=0.8)
    out = kto_step(args, model, batch, lambda b: ref)

    with torch.no_grad():
        logps = torch.stack([_seq_logp_alone(model, f["prompt_ids"], f["completion_ids"]) for f in features])
        kl_logps = torch.stack([_seq_logp_alone(model, f["prompt_ids"], f["kl_completion_ids"]) for f in features])
    z = (kl_logps - ref["ref_kl_logps"]).mean()
    expected, _ = kto_loss(logps, ref["ref_logps"], z, batch["label"], beta=0.5, desirable_weight=1.3, undesirable_weight=0.8)
    torch.testing.assert_close(out.losses.detach(), expected, atol=1e-5, rtol=1e-5)
    assert out.metrics["kl"].item() == pytest.approx(max(z.item(), 0.0), abs=1e-4)
    assert out.weights.tolist() == pytest.approx([f["rdo_weight"] for f in features])
    assert out.losses.requires_grad
    n_d = int(batch["label"].sum())
    assert out.metrics["rewards/desirable"].numel() == n_d and out.metrics["rewards/undesirable"].numel() == 5 - n_d


# ---------------------------------------------------------------------------------------------
# Through `rdo align`
# ---------------------------------------------------------------------------------------------


def _cfg(tmp_path, tiny_model, data, method, **kw):
    return AlignConfig(output_dir=str(tmp_path / "out"), model_name_or_path=str(tiny_model), dataset_name=str(data),
                       method=method, use_cpu=True, report_to="none", **kw)


def test_pairs_become_two_examples_carrying_the_pair_weight(tiny_model, tokenizer, tmp_path):
    data = write_jsonl(tmp_path / "pairs.jsonl", synthetic_pairs(16))
    kto, report = prepare_features(_cfg(tmp_path, tiny_model, data, "kto"), get_method("kto"), tokenizer)
    dpo, _ = prepare_features(_cfg(tmp_path, tiny_model, data, "dpo"), get_method("dpo"), tokenizer)
    assert report["converted"] == "pair -> unpaired" and len(kto) == 2 * len(dpo)
    by_key = {(f["rdo_row"], f["rdo_example"]): f for f in kto}
    for d in dpo:
        good, bad = by_key[d["rdo_row"], 0], by_key[d["rdo_row"], 1]
        assert (good["label"], good["completion_ids"]) == (True, d["chosen_ids"])
        assert (bad["label"], bad["completion_ids"]) == (False, d["rejected_ids"])
        assert good["rdo_weight"] == bad["rdo_weight"] == pytest.approx(d["rdo_weight"])
        for f in (good, bad):  # y' is another row's completion of the same side
            side = [o["completion_ids"] for o in kto if o["rdo_row"] != f["rdo_row"] and o["label"] == f["label"]]
            assert f["kl_completion_ids"] in side


def _mean(entries, key):
    return sum(e[key] for e in entries) / len(entries)


def test_kto_trains_on_unpaired_rows_with_odd_batches(tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "kto.jsonl", synthetic_unpaired(24))
    metrics = run_align(tiny_model, data, tmp_path / "out", "kto", "--beta", "1.0",
                        "--per_device_train_batch_size", "3", "--num_train_epochs", "4")
    logs = step_logs(metrics)
    assert len(logs) == 32
    for key in ("kl", "rewards/desirable", "rewards/undesirable", "logps/desirable", "weights/mean"):
        assert any(key in e for e in logs), key
    # step 1: policy = reference, so z = 0, every reward is 0 and each example's loss is 1 - sigmoid(0) = 0.5
    first = logs[0]
    assert first["kl"] == 0.0 and first.get("rewards/desirable", 0.0) == 0.0 and first.get("rewards/undesirable", 0.0) == 0.0
    assert first["loss/unweighted"] == pytest.approx(0.5, abs=1e-6) and first["loss/weighted"] == pytest.approx(0.5, abs=1e-6)
    assert first["loss"] == pytest.approx(0.5 * first["weights/mean"], rel=1e-5)  # the weighted reduction
    # 24 rows in 8 batches of 3: over each epoch the batch mean weights average the dataset's, 1
    assert _mean(logs[:8], "weights/mean") == pytest.approx(1.0, abs=1e-6)
    assert _mean(logs[-8:], "loss") < _mean(logs[:8], "loss")
    # training raises desirable and lowers undesirable implicit rewards (a swapped label would invert these)
    last = [e for e in logs[-8:] if "rewards/desirable" in e and "rewards/undesirable" in e]
    assert _mean(last, "rewards/desirable") > 0 > _mean(last, "rewards/undesirable")
    (cache,) = tmp_path.glob("rdo-ref-logps-*.pt")  # reference log-probs of examples and KL rows, precomputed
    assert set(torch.load(cache)) == {"key", "about", "rdo_row", "rdo_example", "ref_logps", "ref_kl_logps"}


def test_kto_trains_on_pairs_batch_of_one(tiny_model, tmp_path):
    # B = 1: z comes from one mismatched pair (another row's completion), which TRL cannot do.
    data = write_jsonl(tmp_path / "pairs.jsonl", synthetic_pairs(8))
    metrics = run_align(tiny_model, data, tmp_path / "out", "kto", "--per_device_train_batch_size", "1", "--max_steps", "6")
    logs = step_logs(metrics)
    assert len(logs) == 6 and all("kl" in e for e in logs)
    assert metrics["data"]["rows_trained"] == 16


def test_precomputed_and_live_reference_agree(tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "pairs.jsonl", synthetic_pairs(10))
    flags = ("--per_device_train_batch_size", "5", "--max_steps", "2", "--beta", "1.0")
    cached = step_logs(run_align(tiny_model, data, tmp_path / "a", "kto", *flags))
    live = step_logs(run_align(tiny_model, data, tmp_path / "b", "kto", "--precompute_ref", "false", *flags))
    for a, b in zip(cached, live):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
        assert a["kl"] == pytest.approx(b["kl"], abs=1e-4)


def test_alpha_zero_is_plain_kto_step_by_step(tiny_model, tmp_path):
    with_coef = synthetic_unpaired(12)
    without = [{k: v for k, v in r.items() if k != "rdo_reward_diff"} for r in with_coef]
    flags = ("--per_device_train_batch_size", "3", "--num_train_epochs", "2", "--beta", "1.0")
    plain = step_logs(run_align(tiny_model, write_jsonl(tmp_path / "a.jsonl", without), tmp_path / "a", "kto", "--alpha", "0", *flags))
    zero = step_logs(run_align(tiny_model, write_jsonl(tmp_path / "b.jsonl", with_coef), tmp_path / "b", "kto", "--alpha", "0", *flags))
    rc = step_logs(run_align(tiny_model, tmp_path / "b.jsonl", tmp_path / "c", "kto", "--alpha", "1", *flags))
    assert [e["loss"] for e in zero] == [e["loss"] for e in plain]  # exactly
    assert [e["loss"] for e in rc] != [e["loss"] for e in plain]


def test_missing_coefficient_on_unpaired_rows_suggests_what_works(tiny_model, tmp_path, capsys):
    """`rdo score` refuses unpaired rows, so the error must not send the user there alone."""
    from rdo.cli import main

    data = write_jsonl(tmp_path / "kto.jsonl", synthetic_unpaired(4, with_coef=False))
    code = main(["align", "--model_name_or_path", str(tiny_model), "--dataset_name", str(data), "--output_dir",
                 str(tmp_path / "o"), "--method", "kto", "--use_cpu", "true", "--report_to", "none"])
    err = capsys.readouterr().err
    assert code == 2
    assert "row 1, field 'rdo_reward_diff': missing coefficient" in err
    assert "--alpha 0" in err and "score the pairs" in err
