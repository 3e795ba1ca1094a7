"""Timing, peak memory and worker processes, shared by the benchmarks.

Each measured configuration runs in its own child process (`run_worker`), so its peak memory is its
own: on CPU the child's peak resident set size (`getrusage`), on CUDA the caching allocator's peak
(`torch.cuda.max_memory_allocated`). This module imports neither torch nor transformers at the top,
so the parent process that only orchestrates stays light.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MiB = 2**20


# --- memory ------------------------------------------------------------------------------------

def peak_rss_mib() -> float:
    """This process's peak resident set size so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset the peak RSS to the current RSS (Linux: write 5 to /proc/self/clear_refs).

    `getrusage` then reports the peak *since the reset*, so a phase (training) can be measured apart
    from what came before it (imports, model build, reference pass). False where the kernel refuses.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Peak memory of one phase: `start()` resets the counter, `stop()` reads it (MiB).

    CUDA: `max_memory_allocated` (tensors only, not the allocator's cache or the CUDA context).
    CPU: peak RSS of the whole process, including the Python interpreter and loaded libraries.
    """

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.before_mib: float | None = None  # peak of everything before start()
        self.at_start_mib: float | None = None  # in use when the phase starts (RSS, or allocated tensors)
        self.phase_mib: float | None = None
        self.phase_is_isolated = True

    def now_peak(self) -> float:
        if self.cuda:
            import torch

            return torch.cuda.max_memory_allocated() / MiB
        return peak_rss_mib()

    def start(self) -> None:
        self.before_mib = self.now_peak()
        if self.cuda:
            import torch

            self.at_start_mib = torch.cuda.memory_allocated() / MiB
            torch.cuda.reset_peak_memory_stats()
        else:
            self.at_start_mib = current_rss_mib()
            self.phase_is_isolated = reset_peak_rss()

    def stop(self) -> None:
        self.phase_mib = self.now_peak()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


# --- statistics ---------------------------------------------------------------------------------

def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def steady(xs: list, warmup: int) -> list:
    """Drop the first `warmup` entries (allocator growth, lazy init, first optimizer step)."""
    return xs[warmup:] if len(xs) > warmup else xs[-1:]


def matmul_peak_gflops(device: str, size: int = 1024, repeats: int = 5) -> float:
    """This process's measured fp32 matmul rate (best of `repeats`, size^3 x 2 flops): the MFU denominator.

    Measured in the worker itself, so it uses the same threads as the training it is compared with.
    """
    import time

    import torch

    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    best = float("inf")
    for _ in range(repeats + 1):  # the first warms caches and thread pools
        sync(device)
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        sync(device)
        best = min(best, (time.perf_counter() - start) / 4)
    return 2 * size**3 / best / 1e9


# --- worker processes ---------------------------------------------------------------------------

def child_env(threads: int | None = None) -> dict[str, str]:
    """The parent's environment, offline, quiet, with this checkout's `src` and root importable.

    `threads` (else `RDO_BENCH_THREADS`, set by `run.py --threads`) caps the worker's intra-op threads.
    """
    env = dict(os.environ)
    threads = threads or env.get("RDO_BENCH_THREADS")
    if threads:
        env["OMP_NUM_THREADS"] = env["RDO_BENCH_THREADS"] = str(threads)
    path = [str(ROOT / "src"), str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env.update(
        PYTHONPATH=os.pathsep.join(path), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TQDM_DISABLE="1",
        TOKENIZERS_PARALLELISM="false", TRANSFORMERS_VERBOSITY="error", PYTHONUNBUFFERED="1",
    )
    return env


def run_workers(module: str, specs: list[dict], parallel: int = 1) -> list[dict]:
    """`run_worker` for each spec, in order, or `parallel` at a time (then timings disturb each other)."""
    if parallel <= 1:
        return [run_worker(module, s) for s in specs]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(parallel) as pool:
        return list(pool.map(lambda s: run_worker(module, s), specs))


def run_worker(module: str, spec: dict, timeout: float = 1800) -> dict:
    """Run `python -m module SPEC.json OUT.json` in a fresh process and return OUT's dict.

    A worker that fails returns {"error": ...} with the end of its stderr, so one broken
    configuration does not lose the others' results.
    """
    with tempfile.TemporaryDirectory(prefix="rdo-bench-") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec_path.write_text(json.dumps(dict(spec, tmp_dir=tmp)))
        try:
            proc = subprocess.run([sys.executable, "-m", module, str(spec_path), str(out_path)], cwd=ROOT,
                                  env=child_env(spec.get("threads")), capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s"}
        if proc.returncode != 0 or not out_path.exists():
            return {"error": f"exit code {proc.returncode}", "stderr_tail": proc.stderr[-3000:]}
        return json.loads(out_path.read_text())


def worker_main(fn) -> None:
    """Entry point of a worker module: `fn(spec) -> dict`, read from argv[1], written to argv[2]."""
    spec_path, out_path = sys.argv[1], sys.argv[2]
    spec = json.loads(Path(spec_path).read_text())
    if os.environ.get("RDO_BENCH_THREADS"):
        import torch

        torch.set_num_threads(int(os.environ["RDO_BENCH_THREADS"]))
    result = fn(spec)
    Path(out_path).write_text(json.dumps(result, indent=1))


# --- reporting ----------------------------------------------------------------------------------

def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A GitHub markdown table of `rows` (dicts); floats get 4 significant digits, None is blank."""
    if not rows:
        return ""
    columns = columns or list(dict.fromkeys(k for r in rows for k in r))

    def cell(v) -> str:
        if v is None:
            return ""
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
