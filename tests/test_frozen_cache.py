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
    """Three epochs with the frozen layers replayed = three epochs running them: same weights, same losses."""
    plain = _train(kind, tmp_path / "plain", **frozen, **common)
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
    """A replay that hands rows the wrong states fails the check and training runs without the cache."""
    from rdo.score.frozen_cache import FrozenCache

    real = FrozenCache._replay

    def shifted(self, hidden_states, *args, **kwargs):
        out = real(self, hidden_states, *args, **kwargs)
        return out.roll(1, dims=0)  # every row gets its neighbour's states

    monkeypatch.setattr(FrozenCache, "_replay", shifted)
    with caplog.at_level("INFO", logger="rdo"):
        _train("rm", tmp_path / "bug", freeze_backbone=True, cache_frozen=True, **common)
    assert "training without the cache" in caplog.text


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
