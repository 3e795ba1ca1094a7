"""Per-token log-probs from logits: `rdo.core.logps.selective_log_softmax` vs the naive full log-softmax.

    naive:   torch.log_softmax(logits.float(), -1).gather(-1, index[..., None])  # materialises (B, T, V)
    rdo:     gather(logits, index) - logsumexp(logits), one (T, V) row at a time  # rdo's fp32 path
    rowwise: log_softmax(row.float()).gather(...), one (T, V) row at a time      # rdo's bf16 path, for any dtype

For logits of shape (B, T, V) = (8, 512, 49152) fp32 (SmolLM2's vocabulary; 768 MiB of logits), each
variant is timed (median of repeats after one warm-up) forward only and forward + backward, and its
peak *extra* memory is measured: bytes allocated beyond the logits (and, with backward, beyond
their gradient, which both variants must produce). On CPU every case runs in its own process and
the extra is its peak RSS over the RSS before the call (`/proc/self/clear_refs` resets the peak);
on CUDA one process measures all cases with the caching allocator's exact counters. The analytic
extra of the forward pass is reported beside the measurement.
"""

from __future__ import annotations

import time

from benchmarks.measure import MiB, median, run_workers, worker_main

SHAPES = {"quick": (2, 64, 1024), "full": (8, 512, 49152)}
REPEATS = {"quick": 2, "full": 3}
VARIANTS = ("naive", "rdo", "rowwise")
MODES = ("forward", "forward+backward")


def run(quick: bool, device: str = "cpu") -> dict:
    size = "quick" if quick else "full"
    shape = SHAPES[size]
    cuda = device.startswith("cuda")
    dtypes = ["float32", "bfloat16"] if cuda else ["float32"]
    cases = [dict(variant=v, mode=m, dtype=d) for d in dtypes for m in MODES for v in VARIANTS]
    base = dict(shape=shape, device=device, repeats=REPEATS[size], threads=1 if quick else None)
    if cuda:  # exact allocator counters: one process is enough
        (out,) = run_workers("benchmarks.bench_logps", [dict(base, cases=cases)])
        outs = out.get("results") or [dict(c, **out) for c in cases]  # a failed process fails every case
    else:  # RSS: one process per case, so no case inherits another's freed-but-mapped memory
        specs = [dict(base, cases=[c]) for c in cases]
        done = run_workers("benchmarks.bench_logps", specs, 2 if quick else 1)
        outs = [o["results"][0] if "results" in o else dict(c, **o) for c, o in zip(cases, done)]
    keys = ("dtype", "mode", "variant", "median_s", "extra_mib", "analytic_extra_mib", "error")
    rows = [{k: o.get(k) for k in keys} for o in outs]
    agree = _agreement(outs)
    return {
        "title": f"Log-probs from logits {tuple(shape)}: rdo selective_log_softmax vs naive log_softmax",
        "settings": dict(base, dtypes=dtypes),
        "columns": ["dtype", "mode", "variant", "median_s", "extra_mib", "analytic_extra_mib", "speedup_vs_naive",
                    "memory_vs_naive", "error"],
        "rows": _ratios(rows),
        "summary": [
            "extra_mib: peak memory beyond the logits (and their gradient, with backward); "
            + ("CUDA allocator counters." if cuda else "peak RSS of a fresh process over its RSS before the call."),
            "analytic_extra_mib (forward): naive keeps a full fp32 (B, T, V) log-softmax; rdo and rowwise keep one "
            "fp32 (T, V) row temporary at a time (rdo: exp(logits - max) inside logsumexp; rowwise: the row's "
            "log-softmax).",
            "rowwise is not in rdo for fp32 inputs: it is rdo's own bf16 path, measured on fp32 too as the candidate "
            "that has rdo's memory and a single fused kernel per row.",
            f"outputs agree: {agree['passed']} (max |naive - other| = {agree['max_abs_diff']})",
        ],
        "agreement": agree,
        "passed": agree["passed"],
        "cases": outs,
    }


def _ratios(rows: list[dict]) -> list[dict]:
    naive = {(r["dtype"], r["mode"]): r for r in rows if r["variant"] == "naive" and not r.get("error")}
    for r in rows:
        n = naive.get((r["dtype"], r["mode"]))
        if n and not r.get("error") and r["median_s"]:
            r["speedup_vs_naive"] = n["median_s"] / r["median_s"]
            r["memory_vs_naive"] = (r["extra_mib"] / n["extra_mib"]) if n["extra_mib"] else None
    return rows


def _agreement(outs: list[dict]) -> dict:
    """Both variants' outputs are compared on the same seeded logits: a sample and the total."""
    by = {(o["dtype"], o["mode"], o["variant"]): o for o in outs if "sample" in o}
    diffs = []
    for (dtype, mode, variant), o in by.items():
        other = by.get((dtype, mode, "naive"))
        if variant != "naive" and other:
            diffs += [abs(a - b) for a, b in zip(o["sample"], other["sample"])]
    worst = max(diffs) if diffs else None
    return {"passed": worst is not None and worst < 1e-3, "max_abs_diff": worst}


# ================================================================================================
# worker
# ================================================================================================

def naive_logps(logits, index):
    import torch

    return torch.log_softmax(logits.float(), dim=-1).gather(-1, index.unsqueeze(-1)).squeeze(-1)


def rowwise_logps(logits, index):
    import torch

    return torch.stack([torch.log_softmax(row.float(), dim=-1).gather(-1, idx.unsqueeze(-1)).squeeze(-1)
                        for row, idx in zip(logits, index)])


def measure_case(case: dict, shape, device: str, repeats: int) -> dict:
    import torch

    from benchmarks.measure import current_rss_mib, peak_rss_mib, reset_peak_rss, sync
    from rdo.core.logps import selective_log_softmax

    fn = {"naive": naive_logps, "rdo": selective_log_softmax, "rowwise": rowwise_logps}[case["variant"]]
    dtype = getattr(torch, case["dtype"])
    backward = case["mode"] == "forward+backward"
    cuda = device.startswith("cuda")
    B, T, V = shape
    gen = torch.Generator(device=device).manual_seed(0)
    logits = torch.empty(shape, dtype=dtype, device=device).normal_(generator=gen)  # in place: no temporary
    index = torch.randint(0, V, (B, T), device=device, generator=gen)
    if backward:
        logits.requires_grad_(True)

    def once():
        if backward:
            logits.grad = None
            out = fn(logits, index)
            out.sum().backward()
        else:
            with torch.no_grad():
                out = fn(logits, index)
        return out

    out = once()  # warm-up; the gradient buffer exists from here on in both variants
    sample = out.detach().flatten()[:: max(1, out.numel() // 64)].double().tolist()
    del out
    sync(device)
    # memory of one call
    if cuda:
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        once()
        sync(device)
        extra = (torch.cuda.max_memory_allocated() - base) / MiB
    else:
        base = current_rss_mib()
        isolated = reset_peak_rss()
        once()
        extra = (peak_rss_mib() - base) if isolated else None
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        once()
        sync(device)
        times.append(time.perf_counter() - start)
    elem = 4  # the fp32 the analysis keeps
    analytic = B * T * V * elem if case["variant"] == "naive" else T * V * elem
    return dict(case, median_s=median(times), times_s=times, extra_mib=extra,
                analytic_extra_mib=analytic / MiB if case["mode"] == "forward" else None,
                sample=sample, logits_mib=logits.numel() * logits.element_size() / MiB)


def worker(spec: dict) -> dict:
    import torch

    results = []
    for case in spec["cases"]:
        try:
            results.append(measure_case(case, tuple(spec["shape"]), spec["device"], spec["repeats"]))
        except Exception as e:  # e.g. out of memory: report it, keep the other cases
            results.append(dict(case, error=f"{type(e).__name__}: {e}"))
        if spec["device"].startswith("cuda"):
            torch.cuda.empty_cache()
    return {"results": results}


if __name__ == "__main__":
    worker_main(worker)
