"""The real pretrained model shipped offline (SmolLM2-135M-Instruct): load, align a few steps, score.

Slow-ish (about a minute on 2 cores, most of it the one-time GGUF conversion); it proves the whole
path works on a real checkpoint and tokenizer, not only on tiny random models.
"""

from __future__ import annotations

import pytest

from conftest import write_jsonl

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm(tmp_path_factory):
    pytest.importorskip("gguf")
    from rdo.demo.smollm import smollm2_dir

    try:
        return smollm2_dir()
    except FileNotFoundError as e:
        pytest.skip(str(e))


def test_dpo_rc_steps_on_smollm2(smollm, tmp_path):
    from rdo.align import align
    from rdo.config import AlignConfig

    user = lambda text: [{"role": "user", "content": text}]  # noqa: E731
    bot = lambda text: [{"role": "assistant", "content": text}]  # noqa: E731
    rows = [
        {"prompt": user("Describe a sunny day."), "chosen": bot("A bright, happy, lovely day."), "rejected": bot("Hot and awful."), "rdo_reward_diff": 1.5},
        {"prompt": user("Describe your lunch."), "chosen": bot("Delicious and fresh."), "rejected": bot("Bland."), "rdo_reward_diff": 0.4},
        {"prompt": user("Describe a train ride."), "chosen": bot("Calm and scenic."), "rejected": bot("Late and crowded."), "rdo_reward_diff": -0.2},
        {"prompt": user("Describe a park."), "chosen": bot("Green and peaceful."), "rejected": bot("Dirty."), "rdo_reward_diff": 2.0},
    ]
    data = write_jsonl(tmp_path / "p.jsonl", rows)
    metrics = align(AlignConfig(
        model_name_or_path=str(smollm), dataset_name=str(data), output_dir=str(tmp_path / "out"), use_cpu=True,
        per_device_train_batch_size=2, max_steps=2, learning_rate=1e-5, logging_steps=1, alpha=0.5,
        max_length=64, max_prompt_length=32, disable_tqdm=True, save_strategy="no",
    ))
    first = metrics["log_history"][0]
    assert first["loss/unweighted"] == pytest.approx(0.693147, abs=1e-4)  # policy == reference at step 0: ln 2
    assert metrics["data"]["coefficients"]["frac_raised_to_floor"] == pytest.approx(0.25)
    assert (tmp_path / "out" / "model.safetensors").exists()
