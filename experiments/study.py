"""The demo's study over seeds, label-noise levels and cross-fitting (not run in CI).

    PYTHONPATH=src python experiments/study.py --seeds 0 1 2 --noise 0.1 0.5 --folds 1 2 --out runs/study

Each (noise, folds, seed) is one `rdo demo` run (rdo.demo.pipeline) in <out>/tau<noise>-k<folds>-s<seed>/;
a finished run (its report.json holds the same settings) is read back, not rerun. The table, written
to <out>/study.md and study.json, answers per noise level:

- does rc help DPO?  gold reward of DPO+rc minus DPO, per prompt, pooled over seeds (paired bootstrap
  over (seed, prompt) units: it shows prompt-to-prompt noise, not seed-to-seed spread, so the per-seed
  means are listed too);
- does the difference model beat the reward model?  on held-out accuracy against the true preference
  (difference of accuracies over the pooled held-out pairs, a normal interval that treats the two as
  independent: conservative when their errors are correlated) and on downstream gold reward (paired);
- does cross-fitting change either?  the same rows with --folds K > 1 (held-out accuracy does not
  depend on folds: cross-fitting only changes which scorer scores DPO's training pairs).

`--stop_after train-diff` runs only the scorer part (labels, both scorers, held-out accuracy).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

METHODS = ("dpo", "dpo+rc (reward model)", "dpo+rc (difference model)")


def run_one(out: Path, preset: str, seed: int, noise: float, folds: int, stop_after: str | None) -> dict:
    from rdo.config import DemoConfig
    from rdo.demo import demo

    done = out / "report.json"
    if done.is_file():
        r = json.loads(done.read_text())
        if (r["preset"], r["seed"], r["label_noise"], r["folds"]) == (preset, seed, noise, folds) and (stop_after or "gold") in _ran(r):
            return r
    return demo(DemoConfig(preset=preset, output_dir=str(out), seed=seed, label_noise=noise, folds=folds, stop_after=stop_after))


def _ran(r: dict) -> set[str]:
    return {name.split(" ")[0] for name in r["seconds"]}


def per_prompt(run_dir: Path, name: str) -> dict[str, float]:
    from rdo.demo.pipeline import slug
    from rdo.demo.task import vader_reward

    rows = [json.loads(line) for line in (run_dir / "generations" / f"{slug(name)}.jsonl").read_text().splitlines()]
    return {r["id"]: vader_reward(r["prompt"], r["response"]) for r in rows}


def pooled_paired(runs: list[tuple[Path, dict]], a: str, b: str) -> dict:
    from rdo.evaluate.stats import paired_bootstrap_ci

    xs, ys = [], []
    for run_dir, _ in runs:
        pa, pb = per_prompt(run_dir, a), per_prompt(run_dir, b)
        ids = sorted(pa.keys() & pb.keys())
        xs += [pa[i] for i in ids]
        ys += [pb[i] for i in ids]
    d = [x - y for x, y in zip(xs, ys)]
    return {"n": len(d), "mean_diff": sum(d) / len(d), "ci95": paired_bootstrap_ci(xs, ys, 2000, 0)}


def accuracy_diff(runs: list[tuple[Path, dict]]) -> dict:
    """Difference model minus reward model accuracy over the pooled held-out pairs (unpaired normal interval)."""
    n = sum(r["accuracy"]["rm"]["n_pairs"] for _, r in runs)
    acc = {k: sum(r["accuracy"][k]["accuracy"] * r["accuracy"][k]["n_pairs"] for _, r in runs) / n for k in ("rm", "diff")}
    se = math.sqrt(sum(p * (1 - p) / n for p in acc.values()))
    d = acc["diff"] - acc["rm"]
    return {"n": n, "rm": acc["rm"], "diff": acc["diff"], "mean_diff": d, "ci95": [d - 1.96 * se, d + 1.96 * se]}


def fmt_ci(ci) -> str:
    return f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "—"


def fmt_rate_ci(p: float, n: int) -> str:
    """Normal 95% interval of a rate over n pooled pairs (the seeds share the held-out pairs: too narrow, see docs)."""
    half = 1.96 * math.sqrt(p * (1 - p) / n)
    return f"[{p - half:.3f}, {p + half:.3f}]"


def table(groups: dict, seeds: list[int]) -> str:
    lines = ["| noise τ | folds | seeds | RM accuracy | diff accuracy | diff − RM accuracy (95% CI) |"
             " DPO gold | rc(RM) − DPO (95% CI) | rc(diff) − DPO (95% CI) | rc(diff) − rc(RM) (95% CI) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (noise, folds), g in groups.items():
        acc = g["accuracy"]
        row = [f"{noise}", f"{folds}", f"{len(g['runs'])}", f"{acc['rm']:.3f} {fmt_rate_ci(acc['rm'], acc['n'])}",
               f"{acc['diff']:.3f} {fmt_rate_ci(acc['diff'], acc['n'])}",
               f"{acc['mean_diff']:+.3f} {fmt_ci(acc['ci95'])}"]
        if g.get("paired"):
            p = g["paired"]
            row += [f"{g['dpo_mean']:+.3f}"] + [f"{p[k]['mean_diff']:+.3f} {fmt_ci(p[k]['ci95'])}" for k in ("rc_rm", "rc_diff", "diff_vs_rm")]
        else:
            row += ["—"] * 4
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Per seed (RM accuracy, diff accuracy, mean gold reward of DPO / rc(RM) / rc(diff)):", ""]
    for (noise, folds), g in groups.items():
        for seed, (_, r) in zip(seeds, g["runs"]):
            gold = {w["name"]: w["mean"] for w in r["gold"]["rewards"]} if r.get("gold") else {}
            golds = " / ".join(f"{gold[m]:+.3f}" for m in METHODS) if gold else "—"
            lines.append(f"- τ {noise}, folds {folds}, seed {seed}: {r['accuracy']['rm']['accuracy']:.3f}, "
                         f"{r['accuracy']['diff']['accuracy']:.3f}, {golds}  ({r['minutes']} min)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="smollm2", choices=["smollm2", "tiny"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--noise", type=float, nargs="+", default=[0.1, 0.5], help="label-noise temperatures tau")
    p.add_argument("--folds", type=int, nargs="+", default=[1, 2], help="1 = in-sample scores; K > 1 cross-fitted")
    p.add_argument("--stop_after", default=None, help="e.g. train-diff: the scorer part only")
    p.add_argument("--out", default="runs/study")
    args = p.parse_args(argv)
    out, start = Path(args.out), time.time()
    groups = {}
    for noise in args.noise:
        for folds in args.folds:
            if args.stop_after in ("data", "train-rm", "train-diff") and folds != args.folds[0]:
                continue  # folds only change the scoring of DPO's pairs
            runs = []
            for seed in args.seeds:
                run_dir = out / f"tau{noise}-k{folds}-s{seed}"
                runs.append((run_dir, run_one(run_dir, args.preset, seed, noise, folds, args.stop_after)))
            g = {"runs": runs, "accuracy": accuracy_diff(runs)}
            if all(r.get("gold") for _, r in runs):
                g["dpo_mean"] = sum(w["mean"] for _, r in runs for w in r["gold"]["rewards"] if w["name"] == "dpo") / len(runs)
                g["paired"] = {"rc_rm": pooled_paired(runs, METHODS[1], METHODS[0]), "rc_diff": pooled_paired(runs, METHODS[2], METHODS[0]),
                               "diff_vs_rm": pooled_paired(runs, METHODS[2], METHODS[1])}
            groups[(noise, folds)] = g
    text = table(groups, args.seeds)
    minutes = (time.time() - start) / 60
    text += f"\n\nCommand: {' '.join(['python experiments/study.py', *(argv if argv is not None else sys.argv[1:])])}; {minutes:.1f} min."
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.md").write_text(text + "\n")
    (out / "study.json").write_text(json.dumps({f"tau{n}-k{k}": {kk: vv for kk, vv in g.items() if kk != "runs"} | {"reports": [r for _, r in g["runs"]]}
                                                for (n, k), g in groups.items()}, indent=2, default=str))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
