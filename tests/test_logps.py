"""Response log-probs: the chunked LM-head path equals the model's own logits, in values and gradients."""

from __future__ import annotations

import pytest
import torch

from rdo.core.forward import forward_logps

from rdo.core import logps as L
from rdo.data.collate import prompt_response_batch
from rdo.tiny import tiny_llama


def _batch(vocab: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(4, vocab, (n,), generator=g).tolist() for n in (3, 5, 2, 4)]
    responses = [torch.randint(4, vocab, (n,), generator=g).tolist() for n in (4, 1, 6, 3)]
    return prompt_response_batch(prompts, responses, pad_id=0)


def _naive(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """The textbook computation: full (B, T, V) log-softmax, shifted, masked, summed."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    mask = batch["loss_mask"][:, 1:].float()
    return (logp * mask).sum(1), mask.sum(1)


def _grads(model, fn, batch) -> dict[str, torch.Tensor]:
    model.zero_grad()
    logps, _ = fn(model, batch)
    (logps * torch.tensor([1.0, -2.0, 0.5, 3.0])).sum().backward()  # an arbitrary per-row weighting
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("chunk_elements", [7 * 260, 2**26])  # several chunks (7 positions each) and one
def test_chunked_equals_naive_in_values_and_gradients(monkeypatch, chunk_elements):
    monkeypatch.setattr(L, "CHUNK_ELEMENTS", chunk_elements)
    model = tiny_llama(260, seed=1)
    batch = _batch(260)
    want, want_len = _naive(model, batch)
    got, got_len = L.chunked_logps(model, batch)
    assert got.shape == (4,) and torch.equal(got_len, want_len) and got_len.tolist() == [4, 1, 6, 3]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    g_want, g_got = _grads(model, _naive, batch), _grads(model, L.chunked_logps, batch)
    assert g_want.keys() == g_got.keys()
    for name in g_want:
        torch.testing.assert_close(g_got[name], g_want[name], rtol=1e-4, atol=1e-6, msg=name)


def test_forward_logps_uses_the_verified_chunked_path_and_full_agrees():
    model = tiny_llama(260, seed=2)
    batch = _batch(260, seed=3)
    chunked, _ = forward_logps(model, batch)
    assert L._CHECKED[id(model.get_output_embeddings().weight)] is True
    full, _ = L.full_logps(model, batch)
    torch.testing.assert_close(chunked, full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(chunked, _naive(model, batch)[0], rtol=1e-5, atol=1e-5)


def test_linear_logprobs_gradcheck_with_bias():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(5, 3, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(7, 3, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(7, dtype=torch.float64, generator=g, requires_grad=True)
    t = torch.tensor([0, 6, 3, 3, 1])
    out = L.linear_logprobs(h, w, b, t, chunk=2)
    ref = torch.log_softmax(h @ w.T + b, -1).gather(1, t[:, None]).squeeze(1)
    torch.testing.assert_close(out.double(), ref, rtol=1e-6, atol=1e-6)
    # gradcheck runs the float64 maths through the fp32 output buffer, so compare to autograd instead
    gh, gw, gb = torch.autograd.grad((out * torch.arange(1.0, 6.0)).sum(), (h, w, b))
    rh, rw, rb = torch.autograd.grad((ref * torch.arange(1.0, 6.0, dtype=torch.float64)).sum(), (h, w, b))
    for a, r in ((gh, rh), (gw, rw), (gb, rb)):
        torch.testing.assert_close(a, r, rtol=1e-6, atol=1e-6)


def test_gradients_under_bf16_autocast_equal_autograds():
    """Under bf16 autocast, backward recomputes the logits as the forward made them (bf16), so the
    gradients are autograd's through the plain log-softmax: the hidden states' equal (1e-5 relative to
    their max), the weight's and bias's to bf16 rounding (5e-3: autograd rounds its bf16 matmul's result,
    ours accumulates in fp32). Recomputed in fp32, they were 1.4e-2, 1.3e-2 and 1e-2 off."""
    g = torch.Generator().manual_seed(0)
    h0, w0, b0 = torch.randn(24, 64, generator=g) * 3, torch.randn(300, 64, generator=g) / 4, torch.randn(300, generator=g)
    t, weights = torch.randint(0, 300, (24,), generator=g), torch.randn(24, generator=g)

    def run(fn):
        h, w, b = (x.clone().requires_grad_() for x in (h0, w0, b0))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = fn(h, w, b)
        (out * weights).sum().backward()  # outside autocast, as Trainer runs it
        return out.detach(), h.grad, w.grad, b.grad

    plain = run(lambda h, w, b: torch.log_softmax(torch.nn.functional.linear(h, w, b).float(), -1).gather(1, t[:, None]).squeeze(1))
    ours = run(lambda h, w, b: L.linear_logprobs(h, w, b, t, chunk=7))
    for name, a, r, rel in zip(("logps", "hidden", "weight", "bias"), ours, plain, (1e-6, 1e-5, 5e-3, 5e-3)):
        assert (a - r).abs().max() <= rel * r.abs().max(), name


def test_one_row_check_runs_without_dropout_and_keeps_the_mode():
    """A model training with dropout: the chunked/full comparison runs in eval mode (two dropout
    forwards never agree, so it used to fall back to the full logits), then train mode is back."""
    model = tiny_llama(260, seed=7)
    model.config.attention_dropout = 0.5
    for layer in model.model.layers:
        layer.self_attn.attention_dropout = 0.5
    model.train()
    model.model.layers[0].eval()  # a mixed state is restored module by module
    batch = _batch(260, seed=8)
    forward_logps(model, batch)
    assert L._CHECKED[id(model.get_output_embeddings().weight)] is True
    assert model.training and model.model.layers[1].training and not model.model.layers[0].training


def test_lora_gradients_match():
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(tiny_llama(260, seed=4), peft.LoraConfig(r=4, target_modules="all-linear"))
    for n, p in model.named_parameters():  # make the adapter non-zero so its gradients are informative
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.02)
    batch = _batch(260, seed=5)
    torch.testing.assert_close(L.chunked_logps(model, batch)[0], _naive(model, batch)[0], rtol=1e-5, atol=1e-5)
    g_want, g_got = _grads(model, _naive, batch), _grads(model, L.chunked_logps, batch)
    assert g_want and all("lora" in n for n in g_want)
    for name in g_want:
        torch.testing.assert_close(g_got[name], g_want[name], rtol=1e-4, atol=1e-6, msg=name)


def test_a_model_that_rescales_its_logits_falls_back_to_them():
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    model = Gemma2ForCausalLM(Gemma2Config(
        vocab_size=260, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, head_dim=16, final_logit_softcapping=0.05, pad_token_id=0))
    batch = _batch(260, seed=6)
    assert not torch.allclose(L.chunked_logps(model, batch)[0], _naive(model, batch)[0], atol=1e-3)  # soft-capping missed
    got, _ = forward_logps(model, batch)
    assert L._CHECKED[id(model.get_output_embeddings().weight)] is False
    torch.testing.assert_close(got, _naive(model, batch)[0], rtol=1e-5, atol=1e-5)



def test_ddp_with_unused_parameter_search_and_an_untied_head():
    """Trainer's DDP searches the graph from the forward's outputs for unused parameters: the head's
    zero-width capture output must still reach every parameter, or backward fails ('marked ready twice')."""
    import torch.distributed as dist
    from transformers import LlamaConfig, LlamaForCausalLM

    from conftest import free_port

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=260, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                             num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=False, pad_token_id=0)
        plain = LlamaForCausalLM(config)
        ddp = torch.nn.parallel.DistributedDataParallel(LlamaForCausalLM(config), find_unused_parameters=True)
        ddp.module.load_state_dict(plain.state_dict())
        batch = _batch(260, seed=7)
        for _ in range(2):  # the second step is where a double-ready parameter would fail
            g_want, g_got = _grads(plain, _naive, batch), _grads(ddp, L.chunked_logps, batch)
        assert "lm_head.weight" in g_want
        for name, g in g_want.items():
            torch.testing.assert_close(g_got["module." + name], g, rtol=1e-4, atol=1e-6, msg=name)
    finally:
        dist.destroy_process_group()
