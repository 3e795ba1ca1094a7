"""`python -m rdo.demo` (or `make demo`): the whole RDO pipeline on a real model, offline, on a CPU.

Task: answer "Write two sentences about <subject>." positively. VADER (a real lexicon sentiment
model) is the *gold* reward the policy never sees directly; it only labels which answer is preferred.

1. data    SmolLM2-135M-Instruct samples 3 answers per prompt; VADER picks the best and worst -> a pair
2. scorer  `rdo train-rm` trains a Bradley-Terry reward model (SmolLM2 backbone, LoRA) on the pairs;
           `rdo eval accuracy` measures it on held-out pairs
3. score   `rdo score` writes R = r(chosen) - r(rejected) into every row (rdo_reward_diff)
4. align   `rdo align` trains DPO (alpha = 0) and DPO+rc (alpha = 0.5) on the same scored pairs
5. eval    every model answers held-out prompts greedily; VADER scores the answers

Everything lands in --out (default runs/demo); report.json holds the numbers. A stage whose output
exists is skipped, so an interrupted demo resumes.
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
CPU = dict(use_cpu=True, disable_tqdm=False, report_to="none", seed=0)


def make_pairs(model_dir: Path, prompt_list: list[str], out: Path, gold: Vader, max_new_tokens: int) -> dict:
    """Sample 3 answers per prompt; the pair is (VADER-best, VADER-worst); equal scores are skipped (counted)."""
    from rdo.generate import generate
    from rdo.models import load_causal_lm, load_tokenizer

    tok, model = load_tokenizer(str(model_dir)), load_causal_lm(str(model_dir), "float32")
    samples = generate(model, tok, prompt_list, strategy="sample", num_return_sequences=3,
                       max_new_tokens=max_new_tokens, temperature=1.0, batch_size=8, seed=0)
    rows, ties = [], 0
    for prompt, answers in zip(prompt_list, samples):
        scored = sorted(((gold(a), a) for a in set(answers)), reverse=True)
        if len(scored) < 2 or scored[0][0] == scored[-1][0]:
            ties += 1  # no preference to learn from
            continue
        (g_w, chosen), (g_l, rejected) = scored[0], scored[-1]
        rows.append({"prompt": [{"role": "user", "content": prompt}],
                     "chosen": [{"role": "assistant", "content": chosen}],
                     "rejected": [{"role": "assistant", "content": rejected}],
                     "gold_reward_diff": round(g_w - g_l, 6)})
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"pairs": len(rows), "ties_skipped": ties}


def evaluate(model_dirs: dict[str, Path], test_prompts: list[str], gold: Vader, max_new_tokens: int) -> dict:
    from rdo.generate import generate
    from rdo.models import load_causal_lm, load_tokenizer

    results = {}
    for name, path in model_dirs.items():
        tok, model = load_tokenizer(str(path)), load_causal_lm(str(path), "float32")
        answers = [a[0] for a in generate(model, tok, test_prompts, strategy="greedy", max_new_tokens=max_new_tokens, batch_size=8)]
        scores = [gold(a) for a in answers]
        results[name] = {"mean_gold_reward": sum(scores) / len(scores), "gold_rewards": scores, "answers": answers}
    return results


def stage(name: str, done: Path, fn):
    """Run `fn` unless `done` exists (a resumed demo skips finished stages)."""
    if done.exists():
        log.info("%s: already done (%s)", name, done)
        return None
    log.info("%s", name)
    return fn()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rdo.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo", help="run folder")
    p.add_argument("--test_prompts", type=int, default=10, help="held-out prompts (for scorer accuracy and the final evaluation)")
    p.add_argument("--max_new_tokens", type=int, default=40)
    p.add_argument("--epochs", type=float, default=2, help="DPO epochs")
    p.add_argument("--learning_rate", type=float, default=1e-5, help="DPO learning rate (full fine-tuning)")
    p.add_argument("--alpha", type=float, default=0.5, help="alpha of the DPO+rc run")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from rdo.align import align
    from rdo.config import AlignConfig, EvalAccuracyConfig, ScoreConfig, TrainRMConfig
    from rdo.evaluate.accuracy import eval_accuracy
    from rdo.scoring import score
    from rdo.train_scorers import train_rm

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    gold = Vader()
    all_prompts = prompts()
    train_prompts, test_prompts = all_prompts[: -args.test_prompts], all_prompts[-args.test_prompts:]
    model_dir = smollm2_dir()  # converted from the shipped GGUF once, then cached
    train_pairs, test_pairs, scored = out / "pairs.train.jsonl", out / "pairs.test.jsonl", out / "pairs.train.scored.jsonl"

    stage("1/5 data: sampling answers and labelling pairs with VADER", test_pairs, lambda: (
        make_pairs(model_dir, train_prompts, train_pairs, gold, args.max_new_tokens),
        make_pairs(model_dir, test_prompts, test_pairs, gold, args.max_new_tokens)))
    stage("2/5 scorer: rdo train-rm (SmolLM2 + LoRA)", out / "rm" / "rdo.json", lambda: train_rm(TrainRMConfig(
        model_name_or_path=str(model_dir), dataset_name=str(train_pairs), output_dir=str(out / "rm"),
        lora_r=8, lora_alpha=16, learning_rate=5e-4, head_learning_rate=1e-3, num_train_epochs=2,
        per_device_train_batch_size=8, max_length=192, max_prompt_length=64, logging_steps=2, **CPU)))
    accuracy = eval_accuracy(EvalAccuracyConfig(scorer=str(out / "rm"), dataset_name=str(test_pairs), bootstrap=1000,
                                                output=str(out / "rm_accuracy.json"), num_bins=2, device="cpu"))
    stage("3/5 score: rdo score", scored, lambda: score(ScoreConfig(
        scorer=str(out / "rm"), dataset_name=str(train_pairs), output=str(scored), device="cpu", batch_size=16)))
    runs = {"dpo": 0.0, f"dpo+rc(alpha={args.alpha})": args.alpha}
    for name, alpha in runs.items():
        stage(f"4/5 align: {name}", out / name / "train_metrics.json", lambda: align(AlignConfig(
            model_name_or_path=str(model_dir), dataset_name=str(scored), output_dir=str(out / name),
            method="dpo", alpha=alpha, beta=0.1, learning_rate=args.learning_rate, num_train_epochs=args.epochs,
            lr_scheduler_type="constant", per_device_train_batch_size=4, per_device_eval_batch_size=8,
            max_length=192, max_prompt_length=64, logging_steps=5, **CPU)))
    log.info("5/5 eval: greedy answers to %d held-out prompts, scored by VADER", len(test_prompts))
    evals = evaluate({"base": model_dir, **{n: out / n for n in runs}}, test_prompts, gold, args.max_new_tokens)

    train_metrics = {n: json.loads((out / n / "train_metrics.json").read_text()) for n in runs}
    report = {
        "scorer_accuracy": {k: accuracy.get(k) for k in ("accuracy", "ci95", "n_pairs")},
        "coefficients": {n: m["data"]["coefficients"] for n, m in train_metrics.items()},
        "eval": evals,
        "minutes": (time.time() - start) / 60,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(f"\nreward model accuracy on held-out pairs: {accuracy.get('accuracy')}  (95% CI {accuracy.get('ci95')})")
    print("| model | mean VADER reward of greedy answers to held-out prompts |\n|---|---|")
    for name, r in evals.items():
        print(f"| {name} | {r['mean_gold_reward']:+.3f} |")
    print(f"\nreport: {out / 'report.json'}  ({report['minutes']:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
