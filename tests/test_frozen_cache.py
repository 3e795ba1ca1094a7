"""`--train_top_layers` and `--cache_frozen`: which parameters train, and that replaying the frozen
layers' stored output trains exactly the model that running them every step trains."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from conftest import synthetic_pairs, write_jsonl


@pytest.fixture
def common(tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "p.jsonl", synthetic_pairs(24))
    return dict(model_name_or_path=str(tiny_model), dataset_name=str(data), use_cpu=True, report_to="none",
                disable_tqdm=True, per_device_train_batch_size=8, num_train_epochs=3, head_learning_rate=1e-2,
                learning_rate=1e-2, save_strategy="no", seed=3)


def _train(kind, out, **kw):
    from rdo.config import TrainDiffConfig, TrainRMConfig
    from rdo.score.training import train_diff, train_rm

    if kind == "rm":
        return train_rm(TrainRMConfig(output_dir=str(out), **kw))
    return train_diff(TrainDiffConfig(output_dir=str(out), max_length=256, max_prompt_length=96, **kw))


def test_train_top_layers_freezes_embeddings_and_lower_layers(tiny_model, tmp_path, common):
    _train("rm", tmp_path / "top1", train_top_layers=1, **common)
    base = load_file(tiny_model / "model.safetensors")
    new = load_file(tmp_path / "top1" / "model.safetensors")
    n_layers = 1 + max(int(k.split(".")[2]) for k in new if k.startswith("model.layers."))
    moved = {k for k in new if k in base and not torch.equal(new[k], base[k])}
    top = f"model.layers.{n_layers - 1}."
    assert moved and all(k.startswith(top) or k == "model.norm.weight" for k in moved)  # nothing below the top layer
    assert any(k.startswith(top) for k in moved) and "model.embed_tokens.weight" not in moved


@pytest.mark.parametrize("kind", ["rm", "diff"])
@pytest.mark.parametrize("frozen", [dict(freeze_backbone=True), dict(train_top_layers=1), dict(train_top_layers=1, pooling="mean")])
def test_cache_frozen_trains_the_same_model(tmp_path, common, kind, frozen, caplog):
    """Three epochs with the frozen layers replayed = three epochs running them: same weights, same losses.

    Both on padded rows (--cache_frozen replays padded sequences; prefix-shared rows agree with them to
    rounding, which three epochs of Adam amplify past this test's 1e-5).
    """
    layout = dict(prefix_sharing=False) if kind == "rm" else {}
    plain = _train(kind, tmp_path / "plain", **frozen, **layout, **common)
    with caplog.at_level("INFO", logger="rdo"):
        cached = _train(kind, tmp_path / "cached", cache_frozen=True, **frozen, **common)
    assert "replay checked" in caplog.text and "without the cache" not in caplog.text
    a = load_file(tmp_path / "plain" / "model.safetensors")
    b = load_file(tmp_path / "cached" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6, msg=k)
    losses = lambda m: [h["loss"] for h in m["log_history"] if "loss" in h]  # noqa: E731
    assert losses(cached) == pytest.approx(losses(plain), rel=1e-5)


def test_cache_replay_bug_is_caught(tiny_model, tmp_path, common, caplog, monkeypatch):
    """A replay that hands rows the wrong states fails the check, and training runs without the cache:
    the weights are those of a plain run (a cache installed anyway would train on neighbours' states)."""
    from rdo.score.frozen_cache import FrozenCache

    # --cache_frozen trains on padded rows (even when its check fails): the plain run it must equal does too
    plain = _train("rm", tmp_path / "plain", train_top_layers=1, prefix_sharing=False, **common)
    real = FrozenCache._replay

    def shifted(self, hidden_states, *args, **kwargs):
        out = real(self, hidden_states, *args, **kwargs)
        return out.roll(1, dims=0)  # every row gets its neighbour's states

    monkeypatch.setattr(FrozenCache, "_replay", shifted)
    with caplog.at_level("INFO", logger="rdo"):
        bug = _train("rm", tmp_path / "bug", train_top_layers=1, cache_frozen=True, **common)
    assert "training without the cache" in caplog.text
    _assert_same_model(tmp_path / "plain", tmp_path / "bug", plain, bug)


def test_cache_is_filled_and_checked_in_train_mode(tiny_model, tmp_path, common, caplog, monkeypatch):
    """Training runs in train mode, so the cached states are train mode's: with a module that differs
    between the modes (here the embeddings add 1 while training), cached training = plain training.
    Filled and checked in eval mode, the check passed (eval against eval) and the model trained on other states."""
    import rdo.score.training as training

    build = training.build_scorer_model

    def with_train_only_shift(*args, **kwargs):
        model = build(*args, **kwargs)
        model.get_input_embeddings().register_forward_hook(lambda m, i, out: out + 1.0 if m.training else out)
        return model

    monkeypatch.setattr(training, "build_scorer_model", with_train_only_shift)
    plain = _train("rm", tmp_path / "plain", train_top_layers=1, prefix_sharing=False, **common)  # the cache's layout
    with caplog.at_level("INFO", logger="rdo"):
        cached = _train("rm", tmp_path / "cached", train_top_layers=1, cache_frozen=True, **common)
    assert "replay checked" in caplog.text and "without the cache" not in caplog.text
    _assert_same_model(tmp_path / "plain", tmp_path / "cached", plain, cached)


def _assert_same_model(dir_a, dir_b, metrics_a, metrics_b):
    a, b = load_file(dir_a / "model.safetensors"), load_file(dir_b / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6, msg=k)
    losses = lambda m: [h["loss"] for h in m["log_history"] if "loss" in h]  # noqa: E731
    assert losses(metrics_b) == pytest.approx(losses(metrics_a), rel=1e-5)


@pytest.mark.parametrize("bad, match", [
    (dict(cache_frozen=True), "add --freeze_backbone or --train_top_layers"),
    (dict(cache_frozen=True, freeze_backbone=True, disable_dropout=False), "needs --disable_dropout"),
    (dict(train_top_layers=1, freeze_backbone=True), "drop --freeze_backbone"),
    (dict(train_top_layers=1, lora_r=4), "drop --freeze_backbone / --lora_r"),
    (dict(train_top_layers=-1), "must be >= 0"),
])
def test_frozen_options_refuse_contradictions(tmp_path, common, bad, match):
    from rdo.config import TrainRMConfig

    with pytest.raises(ValueError, match=match):
        TrainRMConfig(output_dir=str(tmp_path / "x"), **{**common, **bad})


def test_train_top_layers_beyond_the_model_is_an_error(tmp_path, common):
    with pytest.raises(ValueError, match="the model has 2 layers"):
        _train("rm", tmp_path / "x", train_top_layers=5, **common)


@pytest.mark.parametrize("kind", ["rm", "diff"])
def test_backbone_layers_saves_the_truncated_model(tiny_model, tmp_path, common, kind):
    """--backbone_layers 1 of 2: the saved scorer is an ordinary 1-layer model, its layer the base model's
    own (a probe), and scoring it gives what the base model with its top layer removed gives."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    out = tmp_path / "b1"
    _train(kind, out, backbone_layers=1, freeze_backbone=True, cache_frozen=True, pooling="mean", **common)
    assert AutoConfig.from_pretrained(out).num_hidden_layers == 1
    base, new = load_file(tiny_model / "model.safetensors"), load_file(out / "model.safetensors")
    assert not any(k.startswith("model.layers.1.") for k in new)
    assert all(torch.equal(new[k], base[k]) for k in new if k.startswith("model.layers.0."))
    saved = AutoModelForSequenceClassification.from_pretrained(out).eval()
    cut = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=1).eval()
    del cut.model.layers[1:]
    cut.score.weight.data = new["score.weight"].clone()
    ids = torch.tensor([[5, 9, 13, 2, 7]])
    torch.testing.assert_close(saved(input_ids=ids).logits, cut(input_ids=ids).logits)


def test_backbone_layers_checks_its_range(tmp_path, common):
    with pytest.raises(ValueError, match=r"--backbone_layers 5: the model has 2 layers \(choose 1..2\)"):
        _train("rm", tmp_path / "x", backbone_layers=5, **common)
    from rdo.config import TrainRMConfig

    with pytest.raises(ValueError, match="--train_top_layers 2 > --backbone_layers 1"):
        TrainRMConfig(output_dir=str(tmp_path / "y"), backbone_layers=1, train_top_layers=2, **common)
    with pytest.raises(ValueError, match="must be >= 0"):
        TrainRMConfig(output_dir=str(tmp_path / "y"), backbone_layers=-1, **common)


def test_decoder_layers_are_found_by_num_hidden_layers_not_by_length(tiny_model, tokenizer):
    """A backbone with a ModuleList longer than its layer stack (say 5 experts, 2 layers): the layers
    are the list of config.num_hidden_layers blocks, and a config matching no list is refused."""
    from rdo.score.scorers import build_scorer_model, decoder_layers, train_only_top

    model = build_scorer_model(str(tiny_model), tokenizer)
    model.model.experts = torch.nn.ModuleList(torch.nn.Linear(2, 2) for _ in range(5))
    assert decoder_layers(model) is model.model.layers
    assert train_only_top(model, 1) == (1, 2)
    trains = lambda m: {p.requires_grad for p in m.parameters()}  # noqa: E731
    assert trains(model.model.layers[0]) == {False} and trains(model.model.layers[1]) == {True}
    assert trains(model.model.embed_tokens) == {False} and trains(model.score) == {True}
    model.config.num_hidden_layers = 3
    with pytest.raises(ValueError, match=r"config.num_hidden_layers = 3 blocks; .*layers \(2\), experts \(5\)"):
        decoder_layers(model)


def test_gradient_checkpointing_backward_stops_at_the_trained_layers(tiny_model, tmp_path, common, monkeypatch):
    """--gradient_checkpointing --train_top_layers 1: no gradient reaches the frozen layer's output (transformers'
    embedding hook sent the backward through it: 6 arrivals in 6 steps), the trained layer gets one per step, and
    the weights are those trained without checkpointing."""
    import rdo.score.training as training

    build, arrivals = training.build_scorer_model, {}

    def counting(*args, **kwargs):
        model = build(*args, **kwargs)
        for i, layer in enumerate(model.model.layers):
            def hook(module, inputs, output, i=i):
                hidden = output[0] if isinstance(output, tuple) else output
                if hidden.requires_grad:
                    hidden.register_hook(lambda g: arrivals.__setitem__(i, arrivals.get(i, 0) + 1))
            layer.register_forward_hook(hook)
        return model

    monkeypatch.setattr(training, "build_scorer_model", counting)
    common = {**common, "num_train_epochs": 2}
    _train("rm", tmp_path / "plain", train_top_layers=1, **common)
    arrivals.clear()
    _train("rm", tmp_path / "ckpt", train_top_layers=1, gradient_checkpointing=True, **common)
    steps = 2 * 3  # 24 pairs in batches of 8, 2 epochs
    assert arrivals == {1: steps}
    a, b = load_file(tmp_path / "plain" / "model.safetensors"), load_file(tmp_path / "ckpt" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6, msg=k)
