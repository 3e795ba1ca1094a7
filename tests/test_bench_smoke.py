"""`python -m benchmarks.run --quick --only dpo` runs end to end and rdo (α=0) reproduces TRL's DPO losses.

Not a timed test: it checks that the harness runs and reports every field, never how fast anything is.
It trains TRL and rdo for real (minutes on 2 cores), so it is `slow`: `make test-fast` leaves it out.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_dpo_benchmark_reports_every_field_and_matching_losses(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--only", "dpo", "--out", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "results.md").read_text().startswith("# rdo benchmarks")

    machine = report["machine"]
    for key in ("date", "device", "cpu_count", "cpu", "python"):
        assert machine[key], key
    for pkg in ("torch", "transformers", "trl"):
        assert machine["versions"][pkg], pkg

    dpo = report["benchmarks"]["dpo"]
    assert [r["framework"] for r in dpo["rows"]] == ["TRL DPOTrainer", "rdo α=0", "rdo α=0, padded rows", "rdo α=0.5"]
    for row in dpo["rows"]:
        assert "error" not in row, row
        for key in ("s_per_step", "s_per_step_min", "cpu_s_per_step", "tokens_per_s", "peak_train_mib", "train_added_mib",
                    "peak_process_mib", "speed_vs_trl", "memory_vs_trl"):
            assert isinstance(row[key], float), (row["framework"], key)
    for run in dpo["runs"]:
        assert len(run["losses"]) == len(run["step_s"]) == dpo["settings"]["steps"]

    # the agreement itself, from the raw per-step losses (not the harness's own verdict)
    runs = {(r["framework"], r["alpha"], r["prefix_sharing"]): r for r in dpo["runs"] if r["model"] == "tiny"}
    trl = runs[("trl", None, None)]["losses"]
    for shared in (True, False):  # rdo's default (one [prompt | chosen | rejected] row per pair) and padded rows
        rdo = runs[("rdo", 0.0, shared)]["losses"]
        assert len(trl) == len(rdo) >= 5
        assert abs(trl[0] - math.log(2)) < 1e-4 and abs(rdo[0] - trl[0]) < 1e-5  # step 1: policy = reference in both
        for step, (a, b) in enumerate(zip(trl, rdo), start=1):
            assert abs(a - b) <= 1e-3 * abs(a), f"step {step}: TRL {a:.6f} vs rdo α=0 (prefix sharing {shared}) {b:.6f}"
    # the shared rows computed each prompt once: exactly batch x prompt tokens fewer per step than TRL's count
    per_step = dpo["settings"]["batch_size"] * dpo["settings"]["prompt_len"]
    assert runs[("rdo", 0.0, True)]["tokens"] == [t - per_step for t in runs[("trl", None, None)]["tokens"]]
    assert max(abs(x - math.log(2)) for x in trl) > 1e-3  # the losses moved, so agreeing is not agreeing on constants
    check = dpo["checks"]["tiny"]
    assert check["passed"], check
    assert check["same_initial_weights"] and check["same_tokens_per_step"]
    assert check["loss_moved"], "the compared losses never left ln 2, so the comparison proves little"
    assert math.isclose(check["trl_first_loss"], math.log(2), abs_tol=1e-4)
    assert math.isclose(check["rdo_alpha0_first_loss"], check["trl_first_loss"], abs_tol=1e-5)
    # α = 0.5 trains on weighted losses: the first differs from ln 2 by the batch's mean weight
    weighted = next(r for r in dpo["runs"] if r["alpha"] == 0.5)
    assert not math.isclose(weighted["losses"][0], math.log(2), abs_tol=1e-3)
