"""Two processes (torchrun, gloo on CPU) give what one process gives: DDP training on the same global
batch, the sharded reference pass, `rdo score` and `rdo eval accuracy`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import free_port, synthetic_pairs, write_jsonl
from scorer_helpers import learnable_pairs

WORKER = Path(__file__).parent / "scripts" / "mp_passes_worker.py"



@pytest.mark.multiproc
def test_two_processes_equal_one(tiny_model, trained_scorers, tmp_path):
    from safetensors.torch import load_file

    from rdo.train.align import align
    from rdo.config import AlignConfig, EvalAccuracyConfig, ScoreConfig
    from rdo.evaluate.accuracy import eval_accuracy
    from rdo.score.scoring import score

    scorers = trained_scorers
    data = write_jsonl(tmp_path / "pairs.jsonl", synthetic_pairs(16, seed=3))
    scorer_data = write_jsonl(tmp_path / "held.jsonl", learnable_pairs(11, seed=9))  # odd: shares of 6 and 5
    two = tmp_path / "two"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
         str(WORKER), str(tiny_model), str(data), str(scorers["rm"]), str(scorer_data), str(two)],
        env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1"), capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads((two / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]

    one = tmp_path / "one"
    align(AlignConfig(
        model_name_or_path=str(tiny_model), dataset_name=str(data), output_dir=str(one / "policy"), use_cpu=True,
        per_device_train_batch_size=4, per_device_eval_batch_size=4, num_train_epochs=1, learning_rate=1e-3, alpha=1.0,
        logging_steps=1, ref_cache_dir=str(one / "cache"), disable_tqdm=True, train_sampling_strategy="sequential",
        seed=0, report_to="none"))

    # the reference pass: each rank computed half the rows (8 + 8), and the values equal one process's
    assert [r["reference_rows_computed"] for r in ranks] == [[8], [8]]
    (c2,), (c1,) = (two / "cache").glob("*.pt"), (one / "cache").glob("*.pt")
    v2, v1 = torch.load(c2, weights_only=True), torch.load(c1, weights_only=True)
    assert torch.equal(v2["rdo_row"], v1["rdo_row"])
    for col in ("ref_chosen_logps", "ref_rejected_logps"):
        torch.testing.assert_close(v2[col], v1[col], rtol=1e-6, atol=1e-5)

    # DDP on 2 x 2 rows per step = one process on 4 rows per step (the same global batches, sequential order)
    p2, p1 = load_file(two / "policy" / "model.safetensors"), load_file(one / "policy" / "model.safetensors")
    assert p2.keys() == p1.keys()
    moved = max(float((p1[k] - load_file(tiny_model / "model.safetensors")[k]).abs().max()) for k in p1)
    assert moved > 1e-4  # training changed the weights, so equality below is not trivially true
    for k in p1:
        torch.testing.assert_close(p2[k], p1[k], rtol=1e-4, atol=1e-5, msg=k)

    # rdo score: the same rows in the same order, the same values
    score(ScoreConfig(scorer=str(scorers["rm"]), dataset_name=str(scorer_data), output=str(one / "scored.jsonl"),
                      device="cpu", batch_size=3, shard_size=4))
    rows2 = [json.loads(x) for x in (two / "scored.jsonl").read_text().splitlines()]
    rows1 = [json.loads(x) for x in (one / "scored.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows2] == [r["id"] for r in rows1] == [r["id"] for r in learnable_pairs(11, seed=9)]
    for a, b in zip(rows2, rows1):
        assert a.keys() == b.keys()
        assert a["rdo_reward_diff"] == pytest.approx(b["rdo_reward_diff"], abs=1e-5)

    # each process scored only its share: 11 rows = chunks of 4, 4, 3 strided over two ranks; 6 + 5 for accuracy
    assert sorted(r["rows_scored"]["score"] for r in ranks) == [4, 7]
    assert sorted(r["rows_scored"]["accuracy"] for r in ranks) == [5, 6]

    # rdo eval accuracy: the main process reports every comparison
    acc1 = eval_accuracy(EvalAccuracyConfig(scorer=str(scorers["rm"]), dataset_name=str(scorer_data), device="cpu",
                                            batch_size=3, dataset_split="train", output=str(one / "accuracy.json")))
    acc2 = json.loads((two / "accuracy.json").read_text())
    assert acc2["n_pairs"] == acc1["n_pairs"] == 11
    assert acc2["accuracy"] == acc1["accuracy"] and acc2["ci95"] == acc1["ci95"]

    # --fsdp on CPU processes: accelerate would quietly train plain DDP; rdo refuses, on every rank
    for r in ranks:
        assert r["fsdp_error"].startswith("--fsdp is set, but accelerate runs this job as MULTI_CPU with 2 process(es)")

