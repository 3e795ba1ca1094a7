"""Two-process training (torchrun, gloo on CPU): coefficients stay attached to their rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import free_port, synthetic_pairs, write_jsonl

WORKER = Path(__file__).parent / "scripts" / "mp_align_worker.py"



@pytest.mark.multiproc
def test_two_processes_keep_each_weight_on_its_row(tiny_model, tmp_path):
    rows = synthetic_pairs(24, seed=5)
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
         str(WORKER), str(tiny_model), str(data), str(out)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads((out / f"seen-rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]  # really two processes, not one silently

    # expected weights, computed independently: alpha=1, clip at 0.01, mean 1 over the dataset
    raw = [max(r["rdo_reward_diff"], 0.01) for r in rows]
    expected = {i + 1: w / (sum(raw) / len(raw)) for i, w in enumerate(raw)}
    seen_rows: list[int] = []
    for rank in ranks:
        for batch in rank["seen"]:
            for row, weight in zip(batch["rows"], batch["weights"]):
                assert weight == pytest.approx(expected[row], rel=1e-6), f"rank {rank['rank']}: row {row} carried a wrong weight"
                seen_rows.append(row)
    # 2 epochs x 24 rows, split between the ranks: every row exactly twice, no row lost or duplicated
    assert sorted(seen_rows) == sorted(list(expected) * 2)
    rank0_rows = {row for b in ranks[0]["seen"] for row in b["rows"]}
    rank1_rows = {row for b in ranks[1]["seen"] for row in b["rows"]}
    assert rank0_rows and rank1_rows  # both ranks trained on data
    # gradients were all-reduced: every parameter tensor equal on both ranks, and every one moved from its
    # initial value (Adam at lr 1e-3 moves each element by ~1e-3 a step), so equal does not mean untrained
    assert ranks[0]["sums"] == pytest.approx(ranks[1]["sums"], rel=1e-9)
    assert min(r["least_moved"] for r in ranks) > 1e-4
