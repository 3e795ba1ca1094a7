"""RRHF+rc in `rdo align`: the batched step against a per-prompt loop written out by hand, training
on ranked rows with K = 2..6 mixed in each batch, pairs as K = 2 rows, and alpha = 0 = plain RRHF."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from rdo.train.align import prepare_features
from rdo.config import AlignConfig
from rdo.data import DataError
from rdo.data.collate import RankedCollator
from rdo.data.tokenize import Encoder, Truncation
from rdo.core.methods import get_method
from rdo.core.methods.rrhf import rrhf_step

from conftest import run_align, step_logs, synthetic_pairs, synthetic_ranked, write_jsonl


@pytest.fixture(scope="module")
def model(tiny_model):
    from rdo.models import load_causal_lm

    return load_causal_lm(str(tiny_model), "float32").eval()


def _features(tokenizer, ks=(2, 6, 3, 5, 4)) -> list[dict]:
    rows = [synthetic_ranked(1, seed=s, k_range=(k, k))[0] for s, k in enumerate(ks)]
    rows[2]["scores"][1] = rows[2]["scores"][0]  # a tie: that pair is not ranked either way
    enc = Encoder(tokenizer, Truncation(64, 32))
    gen = torch.Generator().manual_seed(0)
    features = []
    for row, r in enumerate(rows, start=1):
        f = enc.encode({**r, "rdo_row": row}, "ranked", "test")
        k = len(f["responses_ids"])
        f["rdo_weight"] = (0.5 + torch.rand(k, k, generator=gen)).tolist()  # nonzero on unused pairs too
        features.append(f)
    return features


def _seq_logp_alone(model, prompt: list[int], response: list[int]) -> torch.Tensor:
    """Summed log-prob of `response` after `prompt`, from an unpadded forward of that one sequence."""
    ids = torch.tensor([prompt + response])
    logprobs = torch.log_softmax(model(input_ids=ids).logits[0, :-1], dim=-1)  # (T-1, V)
    positions = torch.arange(len(prompt) - 1, len(prompt) + len(response) - 1)  # predict each response token
    return logprobs[positions, torch.tensor(response)].sum()


def _rrhf_by_hand(model, f, length_penalty, sft_weight):
    """One prompt: (weighted ranking term, unweighted ranking term, SFT term), loops as in the paper."""
    seq = [_seq_logp_alone(model, f["prompt_ids"], r) for r in f["responses_ids"]]
    lengths = [len(r) for r in f["responses_ids"]]
    p = [s / n**length_penalty for s, n in zip(seq, lengths)]
    s, w = f["scores"], f["rdo_weight"]
    weighted = unweighted = torch.zeros(())
    for i in range(len(p)):
        for j in range(len(p)):
            if s[i] < s[j]:  # j better: penalise p_i > p_j
                hinge = torch.clamp(p[i] - p[j], min=0)
                weighted, unweighted = weighted + w[i][j] * hinge, unweighted + hinge
    best = max(range(len(s)), key=lambda i: s[i])
    sft = -seq[best] / lengths[best]
    return weighted, unweighted, sft_weight * sft


@pytest.mark.parametrize("length_penalty,sft_weight", [(1.0, 1.0), (0.5, 0.3)])
def test_batched_step_matches_each_prompt_alone(model, tokenizer, length_penalty, sft_weight):
    features = _features(tokenizer)
    args = SimpleNamespace(rrhf_length_penalty=length_penalty, rrhf_sft_weight=sft_weight)
    batch = RankedCollator(tokenizer.pad_token_id)(features)
    assert batch["response_mask"].sum(1).tolist() == [2, 6, 3, 5, 4]

    out = rrhf_step(args, model, batch, reference=None)
    assert out.losses.shape == out.weights.shape == (5, 6, 6)
    total = (out.weights * out.losses).sum() / 5 + out.extra  # the trainer's reduction
    (grads,) = torch.autograd.grad(total, [model.model.embed_tokens.weight])

    alone = [_rrhf_by_hand(model, f, length_penalty, sft_weight) for f in features]
    expected_total = sum(w + sft for w, _, sft in alone) / 5
    (expected_grads,) = torch.autograd.grad(expected_total, [model.model.embed_tokens.weight])

    ranking = torch.stack([u for _, u, _ in alone]).detach()
    assert (ranking > 0).sum() >= 3, "the random model should violate some rankings, or the test checks nothing"
    torch.testing.assert_close(out.metrics["rrhf/ranking"], ranking, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.metrics["rrhf/sft"] * sft_weight, torch.stack([s for *_, s in alone]).detach(),
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(total, expected_total, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grads, expected_grads, atol=1e-5, rtol=1e-4)
    # 2 + 15 + (3 - 1 tie) + 10 + 6 ranked pairs, one weight each
    assert out.metrics["weights/mean"].numel() == out.metrics["rrhf/pair_accuracy"].numel() == 1 + 15 + 2 + 10 + 6


def test_step_without_padding_responses_is_unchanged(model, tokenizer):
    # The K = 2 prompt gives the same terms alone as inside a batch padded to K = 6.
    features = _features(tokenizer)
    args = SimpleNamespace(rrhf_length_penalty=1.0, rrhf_sft_weight=1.0)
    collate = RankedCollator(tokenizer.pad_token_id)
    with torch.no_grad():
        batched = rrhf_step(args, model, collate(features), None).metrics
        alone = rrhf_step(args, model, collate(features[:1]), None).metrics
    torch.testing.assert_close(batched["rrhf/ranking"][:1], alone["rrhf/ranking"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched["rrhf/sft"][:1], alone["rrhf/sft"], atol=1e-5, rtol=1e-5)


def test_rrhf_trains_on_ranked_rows_with_mixed_k(tiny_model, tmp_path, caplog):
    rows = synthetic_ranked(24, seed=1, k_range=(2, 6))
    assert {len(r["responses"]) for r in rows} == {2, 3, 4, 5, 6}
    data = write_jsonl(tmp_path / "ranked.jsonl", rows)
    with caplog.at_level("WARNING", logger="rdo.train.align"):
        metrics = run_align(tiny_model, data, tmp_path / "out", "rrhf", "--num_train_epochs", "3")
    assert "have no 'rdo_reward_diff' column, so R_ij = scores[j] - scores[i]" in caplog.text  # the fallback is said
    logs = step_logs(metrics)
    assert len(logs) == 18  # 6 batches of 4 prompts x 3 epochs
    for key in ("rrhf/ranking", "rrhf/sft", "rrhf/pair_accuracy", "weights/mean", "loss/unweighted"):
        assert all(key in e for e in logs), key
    first, last = logs[:6], logs[-6:]
    mean = lambda entries, key: sum(e[key] for e in entries) / len(entries)  # noqa: E731
    assert mean(last, "loss") < 0.8 * mean(first, "loss")
    assert mean(last, "rrhf/ranking") < mean(first, "rrhf/ranking")
    assert mean(last, "rrhf/sft") < mean(first, "rrhf/sft")
    assert metrics["data"]["coefficients"]["source"] == "scores"
    assert metrics["data"]["coefficients"]["unit"] == "ranked pair"
    assert (tmp_path / "out" / "model.safetensors").exists()


def _cfg(tmp_path, tiny_model, data, method, **kw):
    return AlignConfig(output_dir=str(tmp_path / "out"), model_name_or_path=str(tiny_model), dataset_name=str(data),
                       method=method, use_cpu=True, report_to="none", **kw)


def test_pairs_become_k2_rows_carrying_the_pair_weight(tiny_model, tokenizer, tmp_path):
    data = write_jsonl(tmp_path / "pairs.jsonl", synthetic_pairs(16))
    rrhf, report = prepare_features(_cfg(tmp_path, tiny_model, data, "rrhf"), get_method("rrhf"), tokenizer)
    dpo, _ = prepare_features(_cfg(tmp_path, tiny_model, data, "dpo"), get_method("dpo"), tokenizer)
    assert report["converted"] == "pair -> ranked"
    for r, d in zip(rrhf, dpo):
        assert r["rdo_row"] == d["rdo_row"]
        assert r["responses_ids"] == [d["rejected_ids"], d["chosen_ids"]] and r["scores"] == [0.0, 1.0]
        assert r["rdo_weight"] == [[0.0, pytest.approx(d["rdo_weight"])], [0.0, 0.0]]


def test_rrhf_trains_on_pairs(tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "pairs.jsonl", synthetic_pairs(16))
    logs = step_logs(run_align(tiny_model, data, tmp_path / "out", "rrhf", "--num_train_epochs", "3", "--alpha", "0",
                               "--rrhf_sft_weight", "0.5"))
    for e in logs:  # L = ranking + sft_weight * SFT, each term logged on its own
        assert e["loss"] == pytest.approx(e["rrhf/ranking"] + 0.5 * e["rrhf/sft"], rel=1e-5)
        assert e["loss/unweighted"] == pytest.approx(e["rrhf/ranking"], rel=1e-6)  # alpha = 0: one pair per row, weight 1
    mean = lambda entries, key: sum(e[key] for e in entries) / len(entries)  # noqa: E731
    assert mean(logs[-4:], "loss") < mean(logs[:4], "loss")
    assert mean(logs[-4:], "rrhf/pair_accuracy") > mean(logs[:4], "rrhf/pair_accuracy")


def _ranked_with_matrix(n: int) -> list[dict]:
    rows = synthetic_ranked(n, seed=2, k_range=(2, 4))
    for r in rows:
        s = r["scores"]
        r["rdo_reward_diff"] = [[round(0.7 * (b - a) + 0.3, 3) for b in s] for a in s]  # a difference model's R
    return rows


def test_alpha_zero_is_plain_rrhf_step_by_step(tiny_model, tmp_path):
    with_coef = _ranked_with_matrix(12)
    without = [{k: v for k, v in r.items() if k != "rdo_reward_diff"} for r in with_coef]
    flags = ("--num_train_epochs", "2")
    plain = step_logs(run_align(tiny_model, write_jsonl(tmp_path / "a.jsonl", without), tmp_path / "a", "rrhf", "--alpha", "0", *flags))
    zero = step_logs(run_align(tiny_model, write_jsonl(tmp_path / "b.jsonl", with_coef), tmp_path / "b", "rrhf", "--alpha", "0", *flags))
    rc = step_logs(run_align(tiny_model, tmp_path / "b.jsonl", tmp_path / "c", "rrhf", "--alpha", "1", *flags))
    assert [e["loss"] for e in zero] == [e["loss"] for e in plain]  # exactly
    assert [e["weights/mean"] for e in zero] == [1.0] * len(zero)
    assert [e["loss"] for e in rc] != [e["loss"] for e in plain]  # the coefficients do change training


def test_ranked_coefficient_column_on_some_rows_only_is_an_error(tiny_model, tokenizer, tmp_path):
    rows = _ranked_with_matrix(4)
    del rows[2]["rdo_reward_diff"]
    data = write_jsonl(tmp_path / "mixed.jsonl", rows)
    with pytest.raises(DataError, match=r"row 3, field 'rdo_reward_diff': missing here but present on other rows"):
        prepare_features(_cfg(tmp_path, tiny_model, data, "rrhf"), get_method("rrhf"), tokenizer)
