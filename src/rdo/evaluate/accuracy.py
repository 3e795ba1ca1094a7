"""`rdo eval accuracy`: how often a reward or difference model prefers the response the data prefers.

- A comparison is correct when R > 0 for (chosen, rejected); R = 0 counts as wrong (the RewardBench
  convention), so a constant scorer scores 0, not 0.5.
- Ranked rows contribute every pair of responses with different scores.
- The 95% interval is a percentile bootstrap over comparisons.
- The confidence table bins comparisons by |R| (equal-count bins by default) and gives each bin's
  accuracy: the paper's Table 15 (Appendix E.1), where confident predictions should be more accurate.
- Difference models are judged by the antisymmetrised R by default; the paper's single pass
  f(x, y_w, y_l) > 0, the reversed order f(x, y_l, y_w) < 0 and the position-consistency rate
  (the sign flips with the order) are reported too.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from tqdm.auto import tqdm

from rdo.config import EvalAccuracyConfig
from rdo.data import load_records
from rdo.evaluate.stats import bootstrap_ci
from rdo.score.scorers import ScorerSpec, load_scorer
from rdo.score.scoring import n_sequences, score_rows, scoring_lengths

log = logging.getLogger("rdo.eval")


def confidence_bins(conf: torch.Tensor, correct: torch.Tensor, num_bins: int, edges: list[float] | None) -> list[dict]:
    """Accuracy per |R| bin: equal-count bins, or [e_i, e_i+1) for explicit edges (the last bin is closed, open above)."""
    if conf.numel() == 0:
        return []
    if edges is None:
        order = torch.argsort(conf, stable=True)
        groups = [g for g in torch.tensor_split(order, min(num_bins, conf.numel())) if g.numel()]
        return [{"lo": float(conf[g].min()), "hi": float(conf[g].max()), "n": g.numel(),
                 "accuracy": float(correct[g].double().mean())} for g in groups]
    bounds = list(edges) + ([float("inf")] if conf.max() > edges[-1] else [])
    out = []
    for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        last = i == len(bounds) - 2
        sel = (conf >= lo) & ((conf <= hi) if last else (conf < hi))
        n = int(sel.sum())
        out.append({"lo": lo, "hi": hi, "n": n, "accuracy": float(correct[sel].double().mean()) if n else None})
    return out


def comparisons_of(entries: list[dict], recs: list[dict], kind: str) -> dict[str, list[float]]:
    """Per comparison: R, and for difference models f(x, y_w, y_l) and f(x, y_l, y_w) where scored."""
    out: dict[str, list] = {"R": [], "f_forward": [], "f_reverse": [], "consistent": [], "checked": []}
    for rec, e in zip(recs, entries):
        if "skipped" in e:
            continue
        R, diag = e["cols"]["rdo_reward_diff"], e["diag"]
        if kind == "pair":
            out["R"].append(R)
            out["f_forward"].append(diag.get("f_forward"))
            out["f_reverse"].append(diag.get("f_reverse"))
        else:
            s = rec["scores"]
            out["R"] += [R[i][j] for i in range(len(s)) for j in range(len(s)) if s[j] > s[i]]
        out["consistent"].append(diag.get("consistent", 0))
        out["checked"].append(diag.get("checked", 0))
    return out


def accuracy_metrics(comp: dict, kind: str, scorer_kind: str, cfg: EvalAccuracyConfig) -> dict:
    R = torch.tensor(comp["R"], dtype=torch.float64)
    correct = R > 0  # ties (R = 0) count as wrong
    metrics = {
        "n_pairs": R.numel(), "accuracy": float(correct.double().mean()),
        "ci95": bootstrap_ci(correct, cfg.bootstrap, cfg.seed), "ties": int((R == 0).sum()),
        "bins": confidence_bins(R.abs(), correct, cfg.num_bins, cfg.edges),
    }
    if scorer_kind == "difference":
        fwd = [f for f in comp["f_forward"] if f is not None]
        rev = [f for f in comp["f_reverse"] if f is not None]
        metrics["accuracy_single_pass"] = sum(f > 0 for f in fwd) / len(fwd) if fwd else None  # f(x, y_w, y_l) > 0
        metrics["accuracy_reversed"] = sum(f < 0 for f in rev) / len(rev) if rev else None  # f(x, y_l, y_w) < 0
        checked = sum(comp["checked"])
        metrics["position_consistency"] = sum(comp["consistent"]) / checked if checked else None
    return metrics


def format_table(m: dict) -> str:
    lines = [f"scorer {m['scorer']} ({m['kind']}{', symmetrised' if m.get('symmetrize') else ''})  data {m['dataset']}  pairs {m['n_pairs']}"]
    ci = f"  95% CI [{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}]" if m["ci95"] else ""
    lines.append(f"accuracy {m['accuracy']:.3f}{ci}  (ties count as wrong: {m['ties']})")
    if m["kind"] == "difference":
        def fmt(v):
            return "n/a" if v is None else f"{v:.3f}"
        lines.append(f"single pass f(x,y_w,y_l) > 0: {fmt(m['accuracy_single_pass'])}   reversed f(x,y_l,y_w) < 0: "
                     f"{fmt(m['accuracy_reversed'])}   position consistency: {fmt(m['position_consistency'])}")
    lines += ["", "confidence vs accuracy (bins of |R|)", f"{'bin':>4}  {'|R| from':>10}  {'to':>10}  {'n':>7}  {'accuracy':>8}"]
    for i, b in enumerate(m["bins"], 1):
        acc = "-" if b["accuracy"] is None else f"{b['accuracy']:.3f}"
        lines.append(f"{i:>4}  {b['lo']:>10.4g}  {b['hi']:>10.4g}  {b['n']:>7d}  {acc:>8}")
    return "\n".join(lines)


def eval_accuracy(cfg: EvalAccuracyConfig) -> dict:
    """Score every comparison of `cfg.dataset_name`, print the table, and write or print the JSON."""
    from rdo.utils import distributed as dist

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    dist.init()  # under torchrun every process scores its share; the main one reports
    device = str(dist.device(cfg.device))
    scorer = load_scorer(cfg.scorer, device, cfg.torch_dtype, *scoring_lengths(ScorerSpec.load(cfg.scorer), cfg),
                         attn_implementation=cfg.attn_implementation)
    loaded = load_records(cfg.dataset_name, split=cfg.dataset_split, tokenizer=scorer.tok, skip_invalid=cfg.skip_invalid, dedupe_ids=cfg.dedupe_ids)
    if loaded.kind == "unpaired":
        raise ValueError(f"{cfg.dataset_name}: unpaired (KTO) rows have no pair to judge")
    recs = loaded.records
    mine = dist.my_share(recs)
    total = sum(n_sequences(r, loaded.kind, scorer.kind, cfg.symmetrize) for r in mine)
    with tqdm(total=total, desc=f"accuracy ({scorer.kind})", unit="seq", disable=not dist.is_main() or None) as bar:
        entries = score_rows(scorer, mine, loaded.kind, cfg.symmetrize, set(), cfg.batch_size, bar, cfg.dataset_name, cfg.max_batch_tokens)
    entries = dist.in_input_order([e for part in dist.gather(entries) for e in part], [r["rdo_row"] for r in recs],
                                  key=lambda e: e["rdo_row"])
    if not dist.is_main():
        return {}
    metrics = {"scorer": cfg.scorer, "kind": scorer.kind, "dataset": cfg.dataset_name,
               "symmetrize": cfg.symmetrize if scorer.kind == "difference" else None}
    metrics |= accuracy_metrics(comparisons_of(entries, recs, loaded.kind), loaded.kind, scorer.kind, cfg)
    metrics["skipped"] = {"at_load": loaded.skips.as_dict(), "too_long": sum("skipped" in e for e in entries)}
    print(format_table(metrics))
    text = json.dumps(metrics, indent=2)
    if cfg.output:
        Path(cfg.output).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.output).write_text(text)
        log.info("wrote %s", cfg.output)
    else:
        print(text)
    return metrics
