"""Shared by the scorer tests: a learnable preference set, and how the session's two scorers are trained.

The scorers themselves are the session fixture `trained_scorers` (conftest.py), trained once into
its own temporary folder; nothing is cached here.

The preference: the chosen response is made of the letters a-d, the rejected one of w-z, so a
2-layer model learns it in a few dozen steps; held-out pairs use fresh strings.
"""

from __future__ import annotations

import random
from pathlib import Path

from conftest import write_jsonl

def learnable_pairs(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        good = "".join(rng.choice("abcd") for _ in range(rng.randint(3, 5)))
        bad = "".join(rng.choice("wxyz") for _ in range(rng.randint(3, 5)))
        rows.append({"id": f"s{seed}-{i}", "prompt": f"q{rng.randint(0, 9)}:", "chosen": " " + good, "rejected": " " + bad})
    return rows


def ranked_rows(n: int, seed: int) -> list[dict]:
    """Three responses per prompt: all good letters (best), mixed, all bad letters (worst), shuffled."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        good = "".join(rng.choice("abcd") for _ in range(4))
        mixed = rng.choice("abcd") + rng.choice("wxyz") + rng.choice("abcd") + rng.choice("wxyz")
        bad = "".join(rng.choice("wxyz") for _ in range(4))
        items = [(" " + good, 2.0), (" " + mixed, 1.0), (" " + bad, 0.0)]
        rng.shuffle(items)
        rows.append({"query": f"q{i}:", "responses": [r for r, _ in items], "scores": [s for _, s in items], "tag": i})
    return rows


def train_scorers(tiny_model: Path, root: Path) -> dict:
    """Train a reward model and a difference model under `root` through `rdo train-rm` / `rdo train-diff`."""
    from rdo.cli import main

    root.mkdir(parents=True, exist_ok=True)
    train = write_jsonl(root / "train.jsonl", learnable_pairs(64, seed=1))
    test = write_jsonl(root / "test.jsonl", learnable_pairs(32, seed=2))
    common = [
        "--model_name_or_path", str(tiny_model), "--dataset_name", str(train), "--per_device_train_batch_size", "8",
        "--report_to", "none", "--disable_tqdm", "true", "--logging_steps", "100", "--max_prompt_length", "16",
    ]
    rm, diff = root / "rm", root / "diff"
    assert main(["train-rm", *common, "--output_dir", str(rm), "--max_length", "64", "--num_train_epochs", "2",
                 "--learning_rate", "1e-3", "--head_learning_rate", "1e-2"]) == 0
    assert main(["train-diff", *common, "--output_dir", str(diff), "--max_length", "128", "--num_train_epochs", "4",
                 "--learning_rate", "1e-2", "--head_learning_rate", "1e-2", "--beta0", "0.1", "--beta1", "0.1"]) == 0
    return {"rm": rm, "diff": diff, "train": train, "test": test}
