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


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from rdo.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tokenizer(tiny_model):
    from rdo.models import load_tokenizer

    return load_tokenizer(str(tiny_model))


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


@pytest.fixture
def pairs_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "pairs.jsonl", synthetic_pairs(32))
