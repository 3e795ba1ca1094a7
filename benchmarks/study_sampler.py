"""Does the training sampler change a reward model's held-out accuracy? (issue 7, item 10)

With a few hundred rows, `group_by_length` puts the whole set in one length group, so every epoch
sees the same length-sorted batches; `random` draws fresh batches. This trains the same reward model
on the same noisy pairs with each sampler and several seeds, and reports held-out accuracy against
the *true* preference (the held-out labels are noise-free).

    python -m benchmarks.study_sampler --seeds 3 --pairs 600

Task: responses are strings over {a, b, c, d} of 3-20 letters; true reward = #a - #b (c, d are
neutral); training labels are drawn Bradley-Terry from the true reward difference / T (so close
pairs are often flipped). The scorer recipe of `rdo train-rm` (1 epoch by default; --epochs).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import tempfile
from pathlib import Path


def noisy_pairs(n: int, seed: int, noisy: bool, temperature: float = 2.0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    while len(rows) < n:
        y1, y2 = ("".join(rng.choice("abcd") for _ in range(rng.randint(3, 20))) for _ in range(2))
        d = (y1.count("a") - y1.count("b")) - (y2.count("a") - y2.count("b"))
        if d == 0:
            continue
        first_wins = rng.random() < 1 / (1 + math.exp(-d / temperature)) if noisy else d > 0
        chosen, rejected = (y1, y2) if first_wins else (y2, y1)
        rows.append({"id": f"{seed}-{len(rows)}", "prompt": "rate:", "chosen": " " + chosen, "rejected": " " + rejected})
    return rows


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run(pairs: int, seeds: int, epochs: float, root: Path, temperature: float = 2.0) -> dict:
    from rdo.config import EvalAccuracyConfig, TrainRMConfig
    from rdo.evaluate.accuracy import eval_accuracy
    from rdo.tiny import build_tiny_model
    from rdo.score.training import train_rm

    model = build_tiny_model(root / "tiny")
    test = write(root / "test.jsonl", noisy_pairs(300, seed=10_000, noisy=False))
    results: dict[str, list[float]] = {}
    for seed in range(seeds):
        train = write(root / f"train{seed}.jsonl", noisy_pairs(pairs, seed=seed, noisy=True, temperature=temperature))
        for strategy in ("group_by_length", "random"):
            out = root / f"{strategy}{seed}"
            train_rm(TrainRMConfig(
                output_dir=str(out), model_name_or_path=str(model), dataset_name=str(train), seed=seed, use_cpu=True,
                train_sampling_strategy=strategy, num_train_epochs=epochs, per_device_train_batch_size=8,
                learning_rate=3e-4, head_learning_rate=3e-3, report_to="none", disable_tqdm=True, logging_steps=1000,
            ))
            acc = eval_accuracy(EvalAccuracyConfig(scorer=str(out), dataset_name=str(test), bootstrap=0, device="cpu",
                                                   output=str(out / "acc.json")))["accuracy"]
            results.setdefault(strategy, []).append(acc)
            print(f"seed {seed} {strategy:16s} held-out accuracy {acc:.3f}", flush=True)
    return {s: {"mean": statistics.mean(v), "per_seed": v} for s, v in results.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=600)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--temperature", type=float, default=2.0, help="label noise: P(y1 wins) = sigmoid(d / temperature)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        summary = run(args.pairs, args.seeds, args.epochs, Path(tmp), args.temperature)
    for strategy, r in summary.items():
        print(f"{strategy:16s} mean {r['mean']:.3f}  per seed {', '.join(f'{a:.3f}' for a in r['per_seed'])}")


if __name__ == "__main__":
    main()
