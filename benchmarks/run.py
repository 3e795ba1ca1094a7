"""`python -m benchmarks.run [--quick] [--device cpu|cuda] [--only NAME] [--out DIR]` (`make bench`).

Runs every `benchmarks/bench_*.py` that defines `run(quick, device) -> dict` (or `run(quick)`), writes
`results.json` (machine, versions, every benchmark's dict) and `results.md` (tables) to `--out`, and
prints the markdown. The JSON is rewritten after each benchmark, so a run cut short keeps what it
finished. Exit status 1 if a benchmark raised or reported `"passed": false`.

A benchmark's dict may hold `title`, `rows` (list of flat dicts -> one table; `columns` picks and
orders them), `summary` (lines), `fairness` / `notes` (bullets); anything else goes to the JSON only.
A dict without `rows` is shown as a table of its scalar values.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import importlib.metadata as md
import inspect
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

from benchmarks.measure import ROOT, markdown_table

PACKAGES = ("torch", "transformers", "trl", "datasets", "accelerate", "peft", "tokenizers", "triton", "rdo")


def discover() -> dict[str, str]:
    """{name: module} for every benchmarks/bench_NAME.py, sorted by name."""
    here = Path(__file__).parent
    return {p.stem.removeprefix("bench_"): f"benchmarks.{p.stem}" for p in sorted(here.glob("bench_*.py"))}


def call(module_name: str, quick: bool, device: str) -> dict:
    """Import the module and call its `run`, passing `device` only where the signature takes it."""
    fn = importlib.import_module(module_name).run
    params = inspect.signature(fn).parameters
    if "device" in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return fn(quick=quick, device=device)
    if device != "cpu":
        print(f"note: {module_name}.run takes no device; it runs as it chooses", file=sys.stderr)
    return fn(quick=quick)


def version(pkg: str) -> str | None:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        mod = sys.modules.get(pkg)
        return getattr(mod, "__version__", None)


def machine_info(device: str) -> dict:
    """What the numbers were measured on. Versions come from package metadata (nothing heavy imported)."""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    info = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "device": device,
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "versions": {p: version(p) for p in PACKAGES},
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain")),
    }
    try:
        with open("/proc/meminfo") as f:
            info["memory_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    if device.startswith("cuda"):
        import torch

        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    gpu_capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda,
                    gpu_count=torch.cuda.device_count())
    return info


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def render(name: str, result: dict) -> str:
    """One benchmark's section of results.md."""
    parts = [f"## {result.get('title', name)}"]
    if "error" in result and "rows" not in result:
        parts.append(f"**failed**: `{result['error']}`")
    elif result.get("rows"):
        parts.append(markdown_table(result["rows"], result.get("columns")))
    else:
        scalars = [{"metric": k, "value": v} for k, v in result.items() if isinstance(v, (int, float, str, bool))]
        parts.append(markdown_table(scalars))
    if result.get("summary"):
        parts.append("\n".join(f"- {line}" for line in result["summary"]))
    for key in ("fairness", "notes"):
        if result.get(key):
            parts.append(f"{key.capitalize()}:\n\n" + "\n".join(f"- {line}" for line in result[key]))
    return "\n\n".join(p for p in parts if p)


def render_all(report: dict) -> str:
    m = report["machine"]
    v = m["versions"]
    where = m.get("gpu") or f"{m['cpu']} ({m['cpus_usable']} usable cores)"
    head = (f"# rdo benchmarks ({'quick' if report['quick'] else 'full'}, {m['device']})\n\n"
            f"{m['date']} on {where}; torch {v['torch']}, transformers {v['transformers']}, trl {v['trl']}, "
            f"datasets {v['datasets']}; threads per worker: {m['threads_per_worker']}; "
            f"load average at start {m['load_average_at_start'][0]:.2f}.")
    body = [render(n, r) for n, r in report["benchmarks"].items()]
    return "\n\n".join([head, *body]) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[1])
    p.add_argument("--quick", action="store_true", help="tiny model and sizes: seconds, checks only (timings meaningless)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to run (default cpu)")
    p.add_argument("--only", default=None, help="comma-separated benchmark names, e.g. dpo,logps")
    p.add_argument("--out", default=str(ROOT / "bench-results"), help="folder for results.json and results.md")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per worker process (default: torch's, all cores). On a shared machine 1 keeps "
                        "timings sane: with every core busy, a competing process stalls each multi-threaded op")
    args = p.parse_args(argv)
    if args.threads:
        os.environ["RDO_BENCH_THREADS"] = str(args.threads)

    available = discover()
    names = list(available) if not args.only else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in available]
    if unknown:
        p.error(f"unknown benchmark(s) {unknown}; available: {sorted(available)}")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            p.error("--device cuda, but torch sees no CUDA device")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"quick": args.quick, "machine": machine_info(args.device), "benchmarks": {}}
    report["machine"]["threads_per_worker"] = args.threads or "torch default"
    ok = True
    for name in names:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        try:
            result = call(available[name], args.quick, args.device)
        except Exception as e:  # one broken benchmark must not lose the others
            result = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        result["wall_s"] = round(time.perf_counter() - start, 1)
        passed = "error" not in result and result.get("passed", True) is not False
        ok &= passed
        report["benchmarks"][name] = result
        report["machine"]["load_average_at_end"] = os.getloadavg()
        (out / "results.json").write_text(json.dumps(report, indent=1, default=str))
        (out / "results.md").write_text(render_all(report))
        print(f"[bench] {name}: {result['wall_s']} s" + ("" if passed else " (failed)"), file=sys.stderr, flush=True)
    print(render_all(report))
    print(f"results: {out / 'results.json'}, {out / 'results.md'}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
