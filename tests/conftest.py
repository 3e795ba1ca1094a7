"""Shared fixtures: a tiny Llama with a byte tokenizer, and small preference files in every format."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the tests may reach a hub
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models gain nothing from intra-op threads, and on a busy 2-core machine OpenMP spin-waits
# made each 2-layer forward ~40x slower (0.35 s instead of 8 ms). Read when torch starts.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from rdo.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tokenizer(tiny_model):
    from rdo.models import load_tokenizer

    return load_tokenizer(str(tiny_model))


@pytest.fixture(scope="session")
def trained_scorers(tiny_model, tmp_path_factory) -> dict:
    """A reward model and a difference model trained once per session: {"rm", "diff", "train", "test"} paths."""
    from scorer_helpers import train_scorers

    return train_scorers(tiny_model, tmp_path_factory.mktemp("scorers"))


@pytest.fixture(scope="session")
def byte_tok(tmp_path_factory):
    """The tiny byte tokenizer alone, saved and reloaded the way a model's is, without building a model."""
    from rdo.models import load_tokenizer
    from rdo.tiny import byte_tokenizer

    path = tmp_path_factory.mktemp("byte_tok")
    byte_tokenizer().save_pretrained(path)
    return load_tokenizer(str(path))


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def synthetic_pairs(n: int, seed: int = 0, with_coef: bool = True) -> list[dict]:
    """A learnable preference: the chosen answer repeats the prompt's letter, the rejected one does not.

    R (`rdo_reward_diff`) grows with how clearly the chosen answer wins, and is sometimes <= 0.
    """
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        letter = rng.choice("abcdefgh")
        other = rng.choice([c for c in "abcdefgh" if c != letter])
        k = rng.randint(2, 6)
        row = {"id": f"p{i}", "prompt": f"say {letter}:", "chosen": " " + letter * k, "rejected": " " + other * k}
        if with_coef:
            row["rdo_reward_diff"] = round(rng.uniform(-0.5, 3.0), 3)
        rows.append(row)
    return rows


def synthetic_ranked(n: int, seed: int = 0, k_range: tuple[int, int] = (2, 6)) -> list[dict]:
    """Ranked rows with K in `k_range`: the answer repeating the prompt's letter scores highest.

    Wrong answers score lower the fewer of the prompt's letter they hold; no coefficient column,
    so RRHF+rc takes R from the score differences.
    """
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        letter = rng.choice("abcdefgh")
        k = rng.randint(*k_range)
        length = rng.randint(2, 6)
        others = rng.sample([c for c in "abcdefgh" if c != letter], k - 1)
        responses = [" " + letter * length] + [" " + o * length for o in others]
        scores = [round(rng.uniform(2.0, 3.0), 3)] + [round(rng.uniform(-1.0, 1.0), 3) for _ in others]
        order = list(range(k))
        rng.shuffle(order)
        rows.append({"id": f"r{i}", "prompt": f"say {letter}:", "responses": [responses[j] for j in order],
                     "scores": [scores[j] for j in order]})
    return rows


def synthetic_unpaired(n: int, seed: int = 0, with_coef: bool = True) -> list[dict]:
    """KTO rows: one side of each synthetic pair, desirable when it is the chosen answer."""
    rng = random.Random(seed + 1)
    rows = []
    for pair in synthetic_pairs(n, seed, with_coef):
        good = rng.random() < 0.5
        row = {"id": pair["id"], "prompt": pair["prompt"], "completion": pair["chosen" if good else "rejected"], "label": good}
        if with_coef:
            row["rdo_reward_diff"] = pair["rdo_reward_diff"]
        rows.append(row)
    return rows


@pytest.fixture
def pairs_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "pairs.jsonl", synthetic_pairs(32))


def run_align(tiny_model: Path, data: Path, out: Path, method: str, *flags: str) -> dict:
    """`rdo align` on CPU through the CLI, logging every step; returns train_metrics.json."""
    from rdo.cli import main

    argv = [
        "align", "--model_name_or_path", str(tiny_model), "--dataset_name", str(data), "--output_dir", str(out),
        "--method", method, "--use_cpu", "true", "--report_to", "none", "--disable_tqdm", "true",
        "--logging_steps", "1", "--seed", "0", "--learning_rate", "2e-3", "--per_device_train_batch_size", "4",
        *flags,
    ]
    assert main(argv) == 0
    return json.loads((out / "train_metrics.json").read_text())


def step_logs(metrics: dict) -> list[dict]:
    """The per-step entries of a run's log history (not the final summary)."""
    return [e for e in metrics["log_history"] if "loss" in e]


def free_port() -> int:
    """A port no process listens on now (a fixed one collides with another run or test on the machine)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
