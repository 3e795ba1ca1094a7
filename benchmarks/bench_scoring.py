"""Scoring throughput (`rdo score`): reward model vs difference model on the same pairs, and vs a naive loop.

    rdo     `rdo.score.scoring.score_rows` as `rdo score` runs it: rows tokenised in one call, sequences sorted by
            length into batches of up to `batch` sequences (on a CPU also at most 1024 padded tokens),
            forward under `inference_mode`.
    rdo-uncapped  the same without the CPU token cap (what a GPU gets), to show why the cap exists.
    naive   one forward per pair (its 1-2 sequences padded together), in data order, under `no_grad`.

Variants, on the same N pairs and the same weights (throughput does not depend on what the head learnt):
    reward               2 sequences per pair: prompt + chosen, prompt + rejected
    difference           2 sequences per pair: f(x, y_w, y_l) and f(x, y_l, y_w) (the antisymmetrised default)
    difference 1-pass    1 sequence per pair: f(x, y_w, y_l) (--no-symmetrize, the paper)

A difference-model sequence holds the prompt once and both responses, so with long prompts it can
beat the reward model per pair (paper, appendix C.2). Lengths are in bytes = tokens (byte tokenizer):
prompts 30-400, responses 20-300 (CPU) or prompts 100-1000, responses 50-500 (CUDA).

`python benchmarks/bench_scoring.py [--quick] [--device cpu|cuda]` prints a table and the JSON;
`make bench` calls `run(quick, device)`.
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import time
from pathlib import Path

SIZES = {  # name: (layers, hidden, heads, pairs, batch sequences)
    "quick": (2, 64, 4, 48, 16),
    "cpu": (4, 256, 4, 128, 32),
    "cuda": (12, 768, 12, 2048, 128),
}


def make_pairs(n: int, seed: int, long: bool) -> list[dict]:
    rng = random.Random(seed)
    p_len, r_len = ((100, 1000), (50, 500)) if long else ((30, 400), (20, 300))
    text = lambda lo_hi: "".join(rng.choice("abcdefgh ") for _ in range(rng.randint(*lo_hi)))  # noqa: E731
    return [{"prompt": text(p_len), "chosen": text(r_len), "rejected": text(r_len), "rdo_row": i + 1} for i in range(n)]


def build_scorers(root: Path, layers: int, hidden: int, heads: int, dtype: str) -> dict[str, Path]:
    """One random backbone + head, saved as a reward scorer and as a difference scorer."""
    from rdo.score.scorers import PAPER_TEMPLATE, ScorerSpec, build_scorer_model
    from rdo.tiny import byte_tokenizer, tiny_llama

    tok = byte_tokenizer()
    base = root / "base"
    lm = tiny_llama(len(tok), layers=layers, hidden=hidden, heads=heads)
    lm.config.max_position_embeddings = 4096
    lm.save_pretrained(base)
    tok.save_pretrained(base)
    model = build_scorer_model(str(base), tok, dtype)
    out = {}
    for kind, spec in (("reward", ScorerSpec("reward", 1024, 512)),
                       ("difference", ScorerSpec("difference", 2048, 1024, PAPER_TEMPLATE))):
        folder = root / kind
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        spec.save(folder)
        out[kind] = folder
    return out


def naive_loop(scorer, recs: list[dict], symmetrize: bool) -> None:
    """One forward per pair, in data order, with the same token ids as rdo score."""
    import torch

    from rdo.data.collate import pad_sequences
    from rdo.score.scoring import row_sequences

    with torch.no_grad():
        for rec in recs:
            seqs = row_sequences(scorer, [rec], "pair", symmetrize, set(), "bench")[0]
            ids, mask = pad_sequences([s for _, s in seqs], scorer.tok.pad_token_id)
            scorer.model(input_ids=ids.to(scorer.device), attention_mask=mask.to(scorer.device), use_cache=False)


def _runner(scorer, symmetrize: bool, impl: str, batch: int, score_rows):
    if impl == "naive":
        return lambda rs: naive_loop(scorer, rs, symmetrize)
    cap = 0 if impl == "rdo-uncapped" else None  # None: rdo score's default for the device
    return lambda rs: score_rows(scorer, rs, "pair", symmetrize, set(), batch, max_batch_tokens=cap)


def timed(fn, device: str) -> float:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def run(quick: bool, device: str = "cpu") -> dict:
    import torch

    from rdo.score.scorers import load_scorer
    from rdo.score.scoring import score_rows

    cuda = device.startswith("cuda")
    size = "quick" if quick else ("cuda" if cuda else "cpu")
    layers, hidden, heads, n, batch = SIZES[size]
    dtype = "bfloat16" if cuda else "float32"
    recs = make_pairs(n, seed=0, long=cuda and not quick)
    impls = ["rdo", "naive"] if cuda else ["rdo", "rdo-uncapped", "naive"]  # on a GPU rdo is uncapped by default
    variants = [(kind, sym, impl) for impl in impls for kind, sym in (("reward", True), ("difference", True), ("difference", False))]
    rounds = 1 if quick else 2
    best: dict[tuple, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folders = build_scorers(Path(tmp), layers, hidden, heads, dtype)
        scorers = {k: load_scorer(str(p), device, dtype) for k, p in folders.items()}
        # rounds over all variants, best time of each: a load change on a shared machine hits every variant alike
        for _ in range(rounds):
            for kind, symmetrize, impl in variants:
                go = _runner(scorers[kind], symmetrize, impl, batch, score_rows)
                go(recs[: max(2, batch // 4)])  # warm-up: kernels, allocator
                seconds = timed(lambda: go(recs), device)
                best[kind, symmetrize, impl] = min(seconds, best.get((kind, symmetrize, impl), float("inf")))
    rows = []
    for (kind, symmetrize, impl), seconds in best.items():
        name = kind if kind == "reward" else ("difference" if symmetrize else "difference 1-pass")
        rows.append({"scorer": name, "impl": impl, "pairs": n, "seqs_per_pair": 2 if symmetrize else 1,
                     "seconds": round(seconds, 3), "pairs_per_s": round(n / seconds, 1)})
    by = {(r["scorer"], r["impl"]): r for r in rows}
    for r in rows:
        r["speedup_vs_naive"] = round(by[(r["scorer"], "naive")]["seconds"] / r["seconds"], 2)
        r["vs_reward_rdo"] = round(r["pairs_per_s"] / by[("reward", "rdo")]["pairs_per_s"], 2)
    return {
        "title": "Scoring throughput: reward vs difference model, rdo score vs a one-pair-at-a-time loop",
        "columns": ["scorer", "impl", "pairs", "seqs_per_pair", "seconds", "pairs_per_s", "speedup_vs_naive", "vs_reward_rdo"],
        "rows": rows,
        "model": {"layers": layers, "hidden": hidden, "heads": heads, "dtype": dtype, "device": device,
                  "batch_sequences": batch, "threads": torch.get_num_threads()},
        "summary": [
            f"rdo score, reward model: {by[('reward', 'rdo')]['pairs_per_s']} pairs/s; difference model: "
            f"{by[('difference', 'rdo')]['pairs_per_s']} (antisymmetrised), {by[('difference 1-pass', 'rdo')]['pairs_per_s']} (single pass)",
            f"speed-up over one pair per forward: {by[('reward', 'rdo')]['speedup_vs_naive']}x (reward), "
            f"{by[('difference', 'rdo')]['speedup_vs_naive']}x (difference)",
        ],
        "fairness": [
            "same pairs, same weights, same token ids (both paths call rdo.score.scoring.row_sequences); tokenisation is inside the timing",
            "one warm-up call per variant before timing; best of 2 interleaved rounds (full size); random weights "
            "(throughput does not depend on them)",
        ],
    }


def _table(result: dict) -> str:
    cols = result["columns"]
    lines = [" | ".join(cols), " | ".join("---" for _ in cols)]
    lines += [" | ".join(str(r[c]) for c in cols) for r in result["rows"]]
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    result = run(args.quick, args.device)
    print(result["title"])
    print(_table(result))
    print("\n".join(result["summary"]))
    print(json.dumps(result, indent=2))
