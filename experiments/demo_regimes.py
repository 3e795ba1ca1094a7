"""Which training regime for the demo's policies? DPO on noisy labels against DPO on the true ones, on validation.

    rdo demo --validation --output_dir runs/val_demo
    PYTHONPATH=src python experiments/demo_regimes.py --run runs/val_demo --out runs/regimes \
        --regimes '{"lr1e-5": {"learning_rate": 1e-5}, "p72": {"dpo_pairs": 72, "num_train_epochs": 2, "learning_rate": 2e-5}}'

For each regime (overrides of the demo's `align` settings; "dpo_pairs" sets how many pairs DPO trains
on), two policies train with `rdo align` on the validation split's pairs (`rdo.demo.pipeline.make_pairs`,
seed 0, tau 0.3, the demo's preset otherwise): DPO on the noisy labels and DPO on the same pairs with
every wrong label corrected. Both answer the validation prompts greedily (`rdo generate`), and
`rdo eval reward --reward_fn rdo.demo.task:vader_reward` compares them, and the validation run's base
model answers, with DPO (bootstrap intervals over prompts, MDE). The held-out prompts are not read.
Prints one JSON line per regime and writes <out>/regimes.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from rdo.config import AlignConfig
    from rdo.demo.candidates import CANDIDATES, load_candidates
    from rdo.demo.pipeline import CPU, PRESETS, gold_rewards, greedy_answers, make_pairs, native_bf16
    from rdo.demo.smollm import smollm2_dir
    from rdo.train.align import align
    from rdo.utils import atomic

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="a `rdo demo --validation` run folder (its prompts and base answers)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--regimes", required=True, help='JSON {name: {align setting: value, ..., "dpo_pairs": n}}')
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--label_noise", type=float, default=0.3)
    args = ap.parse_args(argv)
    report = json.loads((args.run / "report.json").read_text())
    if not report.get("validation"):
        raise SystemExit(f"{args.run}: not a `rdo demo --validation` run (its prompts would be the held-out ones)")
    model, preset = smollm2_dir(), PRESETS["smollm2"]
    bf16 = native_bf16()
    results = {}
    for name, overrides in json.loads(args.regimes).items():
        overrides = dict(overrides)
        pairs = overrides.pop("dpo_pairs", preset.dpo_pairs)
        splits, _ = make_pairs(load_candidates(CANDIDATES), dataclasses.replace(preset, dpo_pairs=pairs), args.label_noise,
                               args.seed, validation=True)
        folder, start = args.out / name, time.time()
        files = {"base": args.run / "generations/base.jsonl"}
        for kind in ("dpo_train", "dpo_true"):
            data = folder / f"data/{kind}.jsonl"
            atomic.write_jsonl(data, splits[kind])
            align(AlignConfig(dataset_name=str(data), output_dir=str(folder / kind), alpha=0.0, ref_cache_dir=str(folder / "ref_cache"),
                              bf16=bf16, model_name_or_path=str(model), seed=args.seed, **CPU, **{**preset.align, **overrides}))
            files[kind] = greedy_answers(folder / kind, args.run / "data/test_prompts.jsonl", folder / f"generations/{kind}.jsonl",
                                         preset.max_new_tokens, preset.batch_size, "bfloat16" if bf16 else "float32")
        gold = gold_rewards(files, baseline="dpo_train", output=folder / "reward.json")
        results[name] = {"align": overrides, "dpo_pairs": pairs, "minutes": round((time.time() - start) / 60, 2),
                         "means": {w["name"]: round(w["mean"], 3) for w in gold["rewards"]},
                         "vs_dpo": {p["a"]: {"mean_diff": round(p["mean_diff"], 3), "ci95": [round(x, 3) for x in p["ci95"]],
                                             "mde": round(p["mde"], 3)} for p in gold["paired"]}}
        print(json.dumps({name: results[name]}), flush=True)
    atomic.write_json(args.out / "regimes.json", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
