"""Prefix sharing: one [prompt | chosen | rejected] row per pair gives the padded rows' log-probs and gradients.

Exactness is checked in fp32 on tiny Llama (tied and untied head), Qwen2 with sliding-window layers
and Gemma-2 (soft-capped logits and attention, sliding window shorter than the sequences), with the
chunked LM head and with the model's own logits, LoRA, truncated prompts and responses, and the real
SmolLM2 chat template. "Relative 1e-5" for gradients: the largest element-wise difference over the
largest gradient element, per parameter.
"""

from __future__ import annotations

import json
import logging

import pytest
import torch

from rdo.core.forward import forward_logps

from conftest import run_align, step_logs, write_jsonl
from rdo.core import logps as L
from rdo.core import prefix as P
from rdo.data.collate import PairCollator, prefix_shared_batch

V = 300


def _features(n: int, seed: int = 0, max_len: int = 12) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        pl, cl, rl = (int(x) for x in torch.randint(1, max_len, (3,), generator=g))
        ids = lambda k: torch.randint(4, V, (k,), generator=g).tolist()  # noqa: E731
        out.append({"prompt_ids": ids(pl), "chosen_ids": ids(cl), "rejected_ids": ids(rl), "rdo_row": i})
    return out


def _common(**kw) -> dict:
    return dict(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=256, **kw)


def _model(kind: str):
    from transformers import (Gemma2Config, Gemma2ForCausalLM, LlamaConfig, LlamaForCausalLM, Qwen2Config,
                              Qwen2ForCausalLM)

    torch.manual_seed(0)
    if kind == "llama-tied":
        return LlamaForCausalLM(LlamaConfig(**_common(tie_word_embeddings=True)))
    if kind == "llama-untied":
        return LlamaForCausalLM(LlamaConfig(**_common(tie_word_embeddings=False)))
    if kind == "qwen2-sliding":  # every layer sliding, window 6 < the 3-22 token sequences
        return Qwen2ForCausalLM(Qwen2Config(**_common(use_sliding_window=True, sliding_window=6, max_window_layers=0)))
    if kind == "gemma2":  # sliding + full layers; caps small enough to bind, so the chunked head is refused
        return Gemma2ForCausalLM(Gemma2Config(**_common(head_dim=8, sliding_window=6, final_logit_softcapping=0.5,
                                                       attn_logit_softcapping=1.0)))
    raise ValueError(kind)


def _assert_grads_close(got: dict, want: dict, rel: float = 1e-5) -> None:
    assert got.keys() == want.keys() and want
    for name in want:
        scale = want[name].abs().max()
        assert scale > 0, name
        assert (got[name] - want[name]).abs().max() <= rel * scale, (name, (got[name] - want[name]).abs().max() / scale)


def _values_and_grads(model, fn, batch) -> tuple[torch.Tensor, torch.Tensor, dict]:
    model.zero_grad()
    logps, lengths = fn(model, batch)
    weights = torch.linspace(-2.0, 3.0, logps.shape[0])  # an arbitrary per-response weighting
    (logps * weights).sum().backward()
    return logps.detach(), lengths, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


# --- layout, literally -------------------------------------------------------------------------

def test_collator_layout_literal():
    features = [{"prompt_ids": [5, 6, 7], "chosen_ids": [8, 9], "rejected_ids": [10], "rdo_row": 0, "rdo_weight": 2.0},
                {"prompt_ids": [11], "chosen_ids": [12, 13, 14], "rejected_ids": [15, 16], "rdo_row": 1, "rdo_weight": 0.5}]
    batch = PairCollator(pad_id=0, prefix_sharing=True)(features)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 3], [0, 1, 2, 3, 1, 2]]
    assert batch["segment_ids"].tolist() == [[0, 0, 0, 1, 1, 2], [0, 1, 1, 1, 2, 2]]
    assert batch["loss_mask"].tolist() == [[0, 0, 0, 1, 1, 1], [0, 1, 1, 1, 1, 1]]
    assert batch["response_units"].tolist() == [[0, 2], [1, 3]]  # chosen b -> b, rejected b -> B + b
    assert batch["rdo_weight"].tolist() == [2.0, 0.5] and batch["rdo_row"].tolist() == [0, 1]


def test_attention_and_read_out_literal():
    batch = prefix_shared_batch([[5, 6]], [[[7, 8], [9]]], [[0, 1]], pad_id=0, multiple_of=8)  # one row, padded to 8
    assert batch["segment_ids"].tolist() == [[0, 0, 1, 1, 2, -1, -1, -1]]
    allowed = P.attention_allowed(batch["segment_ids"])[0].int().tolist()
    assert allowed == [
        [1, 0, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0, 0],  # chosen sees the prompt and itself
        [1, 1, 1, 1, 0, 0, 0, 0],
        [1, 1, 0, 0, 1, 0, 0, 0],  # rejected sees the prompt and itself, not chosen
        [0, 0, 0, 0, 0, 1, 0, 0],  # padding sees itself only
        [0, 0, 0, 0, 0, 0, 1, 0],
        [0, 0, 0, 0, 0, 0, 0, 1],
    ]
    r = P.read_out(batch)
    assert r["targets"].tolist() == [7, 8, 9]
    assert r["keep"][0].nonzero().squeeze(1).tolist() == [1, 2]  # the prompt's last position, chosen's first
    assert r["src"].tolist() == [0, 1, 0]  # rejected's first token is read from the prompt's last position too
    assert r["units"].tolist() == [0, 0, 1]


def test_ranked_layout_literal_and_values():
    """RRHF: one [prompt | y_1 | ... | y_K] row per prompt, log-probs in the padded (sum K,) order."""
    from rdo.data.collate import RankedCollator
    from rdo.tiny import tiny_llama

    features = [{"prompt_ids": [5, 6], "responses_ids": [[7], [8, 9], [10]], "scores": [1.0, 2.0, 0.0], "rdo_row": 0},
                {"prompt_ids": [11, 12, 13], "responses_ids": [[14, 15], [16]], "scores": [0.0, 1.0], "rdo_row": 1}]
    shared = RankedCollator(0, prefix_sharing=True)(features)
    assert shared["input_ids"].tolist() == [[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16]]
    assert shared["position_ids"].tolist() == [[0, 1, 2, 2, 3, 2], [0, 1, 2, 3, 4, 3]]
    assert shared["response_units"].tolist() == [[0, 1, 2], [3, 4, -1]]
    padded = RankedCollator(0)(features)
    assert torch.equal(shared["response_mask"], padded["response_mask"]) and torch.equal(shared["scores"], padded["scores"])
    model = tiny_llama(V, seed=6)
    want, want_len, g_want = _values_and_grads(model, L.chunked_logps, padded)
    got, got_len, g_got = _values_and_grads(model, forward_logps, shared)
    assert torch.equal(got_len, want_len) and got_len.tolist() == [1, 2, 1, 2, 1]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    _assert_grads_close(g_got, g_want)


def test_packed_layout_literal():
    """Padding-free: every pair of the batch in one row; documents keep attention apart."""
    features = [{"prompt_ids": [5, 6], "chosen_ids": [7], "rejected_ids": [8, 9], "rdo_row": 0},
                {"prompt_ids": [10], "chosen_ids": [11, 12], "rejected_ids": [13], "rdo_row": 1}]
    packed = PairCollator(0, prefix_sharing=True, padding_free=True)(features)
    assert packed["input_ids"].tolist() == [[5, 6, 7, 8, 9, 10, 11, 12, 13]]
    assert packed["position_ids"].tolist() == [[0, 1, 2, 2, 3, 0, 1, 2, 1]]
    assert packed["segment_ids"].tolist() == [[0, 0, 1, 2, 2, 0, 3, 3, 4]]
    assert packed["document_ids"].tolist() == [[0, 0, 0, 0, 0, 1, 1, 1, 1]]
    assert packed["response_units"].tolist() == [[0, 2, 1, 3]]
    allowed = P.attention_allowed(packed["segment_ids"], packed["document_ids"])[0].int()
    assert allowed[6].tolist() == [0, 0, 0, 0, 0, 1, 1, 0, 0]  # pair 2's chosen: its own prompt only
    assert allowed[8].tolist() == [0, 0, 0, 0, 0, 1, 0, 0, 1]
    r = P.read_out(packed)
    assert r["targets"].tolist() == [7, 11, 12, 8, 9, 13] and r["units"].tolist() == [0, 1, 1, 2, 2, 3]
    plain = PairCollator(0, padding_free=True)(features)  # no sharing: four prompt+response documents
    assert plain["input_ids"].tolist() == [[5, 6, 7, 10, 11, 12, 5, 6, 8, 9, 10, 13]]
    assert plain["position_ids"].tolist() == [[0, 1, 2, 0, 1, 2, 0, 1, 2, 3, 0, 1]]
    assert plain["response_units"].tolist() == [[0, 1, 2, 3]]


@pytest.mark.parametrize("kind", ["llama-untied", "qwen2-sliding", "gemma2"])
@pytest.mark.parametrize("sharing", [True, False], ids=["shared-packed", "packed"])
def test_padding_free_equals_padded_in_values_and_gradients(kind, sharing):
    model = _model(kind)
    features = _features(5, seed=7, max_len=10)
    packed, padded = PairCollator(0, prefix_sharing=sharing, padding_free=True)(features), PairCollator(0)(features)
    assert packed["input_ids"].shape[0] == 1 and int(packed["attention_mask"].sum()) == packed["input_ids"].numel()
    chunked = L.use_chunked(model, padded)
    want, want_len, g_want = _values_and_grads(model, L.chunked_logps if chunked else L.full_logps, padded)
    got, got_len, g_got = _values_and_grads(model, forward_logps, packed)
    assert P._CHECKED[id(model.get_output_embeddings().weight)] is True
    assert torch.equal(got_len, want_len)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    _assert_grads_close(g_got, g_want)
    assert torch.equal(P.unshare(packed)["input_ids"], padded["input_ids"])


def test_unshare_rebuilds_the_padded_batch():
    features = _features(3, seed=1)
    shared = PairCollator(0, prefix_sharing=True)(features)
    padded = PairCollator(0)(features)
    rebuilt = P.unshare(shared)
    for key in ("input_ids", "attention_mask", "loss_mask"):
        assert torch.equal(rebuilt[key], padded[key]), key


# --- exactness ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["llama-tied", "llama-untied", "qwen2-sliding", "gemma2"])
@pytest.mark.parametrize("chunked", [True, False], ids=["chunked-head", "model-logits"])
def test_shared_equals_padded_in_values_and_gradients(kind, chunked):
    model = _model(kind)
    features = _features(5, seed=2, max_len=12)
    shared, padded = PairCollator(0, prefix_sharing=True)(features), PairCollator(0)(features)
    assert shared["input_ids"].numel() < padded["input_ids"].numel()
    padded_fn = L.chunked_logps if chunked else L.full_logps
    want, want_len, g_want = _values_and_grads(model, padded_fn, padded)
    got, got_len, g_got = _values_and_grads(model, lambda m, b: P.shared_logps(m, b, chunked), shared)
    assert torch.equal(got_len, want_len)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    _assert_grads_close(g_got, g_want)


def test_forward_logps_checks_once_and_uses_the_shared_path(caplog):
    model = _model("gemma2")
    features = _features(4, seed=3)
    shared = PairCollator(0, prefix_sharing=True)(features)
    with caplog.at_level(logging.WARNING):
        got, _ = forward_logps(model, shared)
    key = id(model.get_output_embeddings().weight)
    assert P._CHECKED[key] is True and L._CHECKED[key] is False  # shared yes; Gemma-2's soft-capped head: full logits
    assert not any("prefix sharing" in r.message for r in caplog.records)
    want, _ = L.full_logps(model, PairCollator(0)(features))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_a_model_that_ignores_the_mask_falls_back_with_one_warning(monkeypatch, caplog):
    """An attention that cannot take the mask (here: one that keeps plain causal attention) fails the check."""
    model = _model("llama-untied")
    causal = lambda seg, doc=None: torch.ones(seg.shape[1], seg.shape[1], dtype=torch.bool).tril().expand(seg.shape[0], -1, -1)  # noqa: E731
    monkeypatch.setattr(P, "attention_allowed", causal)
    features = _features(4, seed=4)
    shared = PairCollator(0, prefix_sharing=True)(features)
    with caplog.at_level(logging.WARNING, logger="rdo.core.prefix"):
        first, _ = forward_logps(model, shared)
        second, _ = forward_logps(model, shared)
    assert P._CHECKED[id(model.get_output_embeddings().weight)] is False
    assert sum("prefix sharing is off" in r.message for r in caplog.records) == 1
    want, _ = L.chunked_logps(model, PairCollator(0)(features))
    torch.testing.assert_close(first, want, rtol=0, atol=0)  # the padded path itself
    torch.testing.assert_close(second, want, rtol=0, atol=0)
    # and the broken mask really would have been wrong
    assert (P.shared_logps(model, shared, True)[0] - want).abs().max() > 1e-3


def test_lora_values_and_gradients():
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(_model("llama-untied"), peft.LoraConfig(r=4, target_modules="all-linear"))
    for n, p in model.named_parameters():  # a non-zero adapter, so its gradients are informative
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.1)
    features = _features(4, seed=5)
    shared, padded = PairCollator(0, prefix_sharing=True)(features), PairCollator(0)(features)
    want, _, g_want = _values_and_grads(model, forward_logps, padded)
    got, _, g_got = _values_and_grads(model, forward_logps, shared)
    assert any("lora" in n for n in g_got) and not any("embed" in n for n in g_got)  # only the adapter trains
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    _assert_grads_close(g_got, g_want)
    with model.disable_adapter(), torch.no_grad():  # the reference pass: the base model, also shared
        torch.testing.assert_close(forward_logps(model, shared)[0], forward_logps(model, padded)[0], rtol=1e-5, atol=1e-5)


def _encode(tokenizer, rows: list[dict], tmp_path, max_length: int, max_prompt_length: int) -> list[dict]:
    from rdo.data import load_records
    from rdo.data.tokenize import Encoder, Truncation, encode_records

    loaded = load_records(str(write_jsonl(tmp_path / "rows.jsonl", rows)), tokenizer=tokenizer)
    return encode_records(loaded.records, Encoder(tokenizer, Truncation(max_length, max_prompt_length)), "pair", "rows.jsonl",
                          skip_invalid=False, skips=loaded.skips)


def test_truncated_prompts_and_responses(byte_tok, tmp_path):
    from rdo.tiny import tiny_llama

    rows = [{"prompt": "tell me about " + "cats " * 12, "chosen": "they purr " * 9, "rejected": "no"},
            {"prompt": "hi", "chosen": "hello " * 20, "rejected": "hey " * 15},
            {"prompt": "q" * 30, "chosen": "a", "rejected": "b" * 40}]
    features = _encode(byte_tok, rows, tmp_path, max_length=40, max_prompt_length=16)
    assert len(features[0]["prompt_ids"]) == 16 and len(features[2]["prompt_ids"]) == 16  # prompts cut from the left
    assert len(features[1]["prompt_ids"]) + len(features[1]["chosen_ids"]) == 40  # responses cut to fit
    assert features[1]["chosen_ids"][-1] == byte_tok.eos_token_id  # ... keeping EOS
    model = tiny_llama(len(byte_tok), seed=3)
    shared, padded = PairCollator(byte_tok.pad_token_id, prefix_sharing=True)(features), PairCollator(byte_tok.pad_token_id)(features)
    want, want_len, g_want = _values_and_grads(model, L.chunked_logps, padded)
    got, got_len, g_got = _values_and_grads(model, forward_logps, shared)
    assert torch.equal(got_len, want_len)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    _assert_grads_close(g_got, g_want)


def test_smollm2_chat_template(tmp_path):
    """The real SmolLM2 tokenizer and chat template (its turn ends kept), on a tiny model of its vocabulary."""
    from rdo.demo.smollm import smollm2_dir
    from rdo.models import load_tokenizer
    from rdo.tiny import tiny_llama

    tok = load_tokenizer(str(smollm2_dir()))
    user = lambda text: [{"role": "user", "content": text}]  # noqa: E731
    bot = lambda text: [{"role": "assistant", "content": text}]  # noqa: E731
    rows = [{"prompt": user("Describe a sunny day."), "chosen": bot("Bright and warm."), "rejected": bot("Hot.")},
            {"prompt": user("Name a colour. " * 8), "chosen": bot("Blue, like the sea on a calm day " * 3), "rejected": bot("Red.")}]
    features = _encode(tok, rows, tmp_path, max_length=64, max_prompt_length=48)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert all(im_end in f["chosen_ids"] for f in features)  # the template's end of turn is part of the response
    model = tiny_llama(len(tok), hidden=32, seed=4)
    shared, padded = PairCollator(tok.pad_token_id, prefix_sharing=True)(features), PairCollator(tok.pad_token_id)(features)
    want, _, g_want = _values_and_grads(model, L.chunked_logps, padded)
    got, _, g_got = _values_and_grads(model, forward_logps, shared)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    _assert_grads_close(g_got, g_want)


def test_pair_metrics_tie():
    from rdo.core.methods.pairwise import _pair_metrics

    zeros, ones = torch.zeros(3), torch.ones(3)
    assert _pair_metrics(zeros, zeros, -ones, -ones, ones)["rewards/accuracies"].tolist() == [0.0, 0.0, 0.0]  # a tie is not correct


# --- rdo align ---------------------------------------------------------------------------------

@pytest.mark.parametrize("method,flags,layout", [
    ("dpo", (), ()), ("simpo", (), ()), ("rrhf", (), ()), ("ipo", (), ("--padding_free",)),
    ("dpo", ("--lora_r", "4", "--lora_dropout", "0", "--precompute_ref", "false"), ())],
    ids=["dpo", "simpo", "rrhf-on-pairs", "ipo-shared-and-packed", "dpo-lora-live-reference"])
def test_align_losses_equal_with_and_without_prefix_sharing(tiny_model, tmp_path, method, flags, layout, caplog):
    """Step by step the same run (LoRA dropout off: its masks are drawn per element, so another layout draws others)."""
    from conftest import synthetic_pairs

    data = write_jsonl(tmp_path / "pairs.jsonl", synthetic_pairs(8))
    common = ("--max_steps", "2", "--alpha", "0.5", *flags)
    with caplog.at_level(logging.WARNING, logger="rdo.core.prefix"):
        shared = step_logs(run_align(tiny_model, data, tmp_path / "shared", method, *common, *layout))
    assert not any("prefix sharing is off" in r.message for r in caplog.records)  # the shared path ran
    padded = step_logs(run_align(tiny_model, data, tmp_path / "padded", method, *common, "--no_prefix_sharing"))
    assert len(shared) == len(padded) == 2
    for a, b in zip(shared, padded):
        assert a.keys() == b.keys()
        compared = [k for k in a if k in ("loss", "grad_norm") or k.startswith(("loss/", "logps/", "rewards/", "rrhf/"))]
        assert len(compared) >= 4
        for key in compared:
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
    saved = json.loads((tmp_path / "shared" / "rdo_config.json").read_text())
    assert saved["prefix_sharing"] is True


# --- the reward model (rdo train-rm) -----------------------------------------------------------

@pytest.mark.parametrize("layout", [dict(prefix_sharing=True), dict(prefix_sharing=True, padding_free=True)],
                         ids=["shared", "shared-packed"])
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_reward_model_scores_and_gradients_equal_padded_rows(tiny_model, tokenizer, layout, lora):
    from rdo.score.scorers import build_scorer_model, use_scorer_pad
    from rdo.score.training import RewardCollator, reward_step, scores_of

    tok = tokenizer
    use_scorer_pad(tok)
    model = build_scorer_model(str(tiny_model), tok)
    torch.nn.init.normal_(model.score.weight, std=0.5)  # the fresh head: non-trivial scores
    if lora:
        from rdo.models import add_lora

        model = add_lora(model, 4, 8, 0.0, "all-linear", task_type="SEQ_CLS")
        for n, p in model.named_parameters():
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.1)
    g = torch.Generator().manual_seed(8)
    ids = lambda k: torch.randint(4, 200, (k,), generator=g).tolist() + [tok.eos_token_id]  # noqa: E731
    features = [{"prompt_ids": ids(p), "chosen_ids": ids(c), "rejected_ids": ids(r), "rdo_row": i}
                for i, (p, c, r) in enumerate([(6, 3, 9), (2, 7, 1), (11, 4, 4)])]
    padded = RewardCollator(tok.pad_token_id)(features)
    shared = RewardCollator(tok.pad_token_id, **layout)(features)
    assert shared["input_ids"].numel() < padded["input_ids"].numel()

    def run(batch):
        model.zero_grad()
        losses, _ = reward_step(None, model, batch)
        losses.sum().backward()
        return scores_of(model, batch).detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    want, g_want = run(padded)
    got, g_got = run(shared)
    from rdo.core.logps import _unwrap
    from rdo.score.scorers import _SHARED_CHECKED

    assert _SHARED_CHECKED[id(_unwrap(model).get_input_embeddings().weight)] is True  # the shared path ran
    assert want.std() > 0.1  # scores that differ, so equal scores are not constants
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    _assert_grads_close(g_got, g_want)


def test_train_rm_losses_equal_with_and_without_prefix_sharing(tiny_model, tmp_path, caplog):
    from conftest import synthetic_pairs
    from rdo.cli import main

    data = write_jsonl(tmp_path / "pairs.jsonl", synthetic_pairs(12))
    logs = {}
    for name, flags in (("shared", ()), ("padded", ("--no_prefix_sharing",))):
        out = tmp_path / name
        with caplog.at_level(logging.WARNING, logger="rdo.core.prefix"):
            assert main(["train-rm", "--model_name_or_path", str(tiny_model), "--dataset_name", str(data),
                         "--output_dir", str(out), "--per_device_train_batch_size", "4", "--max_steps", "3",
                         "--logging_steps", "1", "--report_to", "none", "--disable_tqdm", "true", "--use_cpu", "true",
                         "--learning_rate", "1e-3", "--head_learning_rate", "1e-2", *flags]) == 0
        logs[name] = step_logs(json.loads((out / "train_metrics.json").read_text()))
    assert not any("prefix sharing is off" in r.message for r in caplog.records)
    assert len(logs["shared"]) == len(logs["padded"]) == 3
    for a, b in zip(logs["shared"], logs["padded"]):
        for key in ("loss", "grad_norm", "rewards/chosen", "rewards/margins"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key


def test_rdo_score_reward_model_equal_with_and_without_prefix_sharing(trained_scorers, tmp_path, monkeypatch, caplog):
    from scorer_helpers import ranked_rows

    from rdo.config import ScoreConfig
    from rdo.score.scorers import Scorer
    from rdo.score.scoring import score

    calls = []
    original = Scorer.forward_shared
    monkeypatch.setattr(Scorer, "forward_shared", lambda self, p, s: calls.append(len(p)) or original(self, p, s))
    for name, rows in (("pairs", None), ("ranked", ranked_rows(6, seed=3))):
        data = trained_scorers["train"] if rows is None else write_jsonl(tmp_path / "ranked.jsonl", rows)
        out = {}
        for sharing in (True, False):
            path = tmp_path / f"{name}-{sharing}.jsonl"
            with caplog.at_level(logging.WARNING, logger="rdo.core.prefix"):
                score(ScoreConfig(scorer=str(trained_scorers["rm"]), dataset_name=str(data), output=str(path),
                                  prefix_sharing=sharing, batch_size=4))
            out[sharing] = [json.loads(line) for line in path.read_text().splitlines()]
        assert len(out[True]) == len(out[False]) > 0
        for a, b in zip(out[True], out[False]):
            assert torch.tensor(a["rdo_reward_diff"]).allclose(torch.tensor(b["rdo_reward_diff"]), rtol=1e-5, atol=1e-5)
            assert torch.tensor(a["rdo_scores"] if "rdo_scores" in a else a["rdo_score_chosen"]).allclose(
                torch.tensor(b["rdo_scores"] if "rdo_scores" in b else b["rdo_score_chosen"]), rtol=1e-5, atol=1e-5)
    assert calls and not any("prefix sharing is off" in r.message for r in caplog.records)


@pytest.mark.slow
def test_real_smollm2_weights_fp32_exact_and_bf16_check_passes():
    """The shipped SmolLM2-135M: shared = padded to fp32 rounding; in bf16 the once-per-model check still
    accepts the shared layout (its tolerance sits above bf16's own batch-to-batch noise)."""
    import random

    from transformers import AutoModelForCausalLM

    from rdo.demo.smollm import smollm2_dir

    model = AutoModelForCausalLM.from_pretrained(smollm2_dir(), dtype=torch.float32)
    rng = random.Random(0)
    ids = lambda lo, hi: [rng.randrange(4, 49000) for _ in range(rng.randint(lo, hi))]  # noqa: E731
    features = [{"prompt_ids": ids(20, 120), "chosen_ids": ids(10, 60), "rejected_ids": ids(10, 60), "rdo_row": i} for i in range(3)]
    shared, padded = PairCollator(0, prefix_sharing=True)(features), PairCollator(0)(features)
    with torch.no_grad():
        got, n = P.shared_logps(model, shared, True)
        want, m = L.chunked_logps(model, padded)
        assert torch.equal(n, m)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
        model.to(torch.bfloat16)
        assert P._verified(model, shared, True) is True
        got, _ = forward_logps(model, shared)
        want, _ = L.chunked_logps(model, padded)
        assert ((got - want).abs() / n).max() < P.TOKEN_TOLERANCE[True]
