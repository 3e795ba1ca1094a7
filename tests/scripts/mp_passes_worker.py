"""Run by tests/test_distributed_passes.py under `torchrun --nproc_per_node 2`.

Under two processes: DPO+rc training, its sharded reference pass (recording how many rows each rank
computed), `rdo score` and `rdo eval accuracy`, so the test can compare each with one process.
"""

import json
import os
import sys

import torch

from rdo.train import reference
from rdo.train.align import align
from rdo.config import AlignConfig, EvalAccuracyConfig, ScoreConfig
from rdo.evaluate.accuracy import eval_accuracy
from rdo.score.scoring import score

model, data, scorer, scorer_data, out = sys.argv[1:6]
rank = int(os.environ["RANK"])
computed = []
original = reference.compute_reference


def counting(model_, features, *args, **kwargs):
    computed.append(len(features))
    return original(model_, features, *args, **kwargs)


reference.compute_reference = counting
scored = {"score": 0, "accuracy": 0}


def counted(name, fn):
    def wrapper(scorer_, recs, *args, **kwargs):
        scored[name] += len(recs)
        return fn(scorer_, recs, *args, **kwargs)
    return wrapper


import rdo.evaluate.accuracy as accuracy_module  # noqa: E402
import rdo.score.scoring as scoring_module  # noqa: E402

scoring_module.score_rows = counted("score", scoring_module.score_rows)
accuracy_module.score_rows = counted("accuracy", accuracy_module.score_rows)
cfg = AlignConfig(
    model_name_or_path=model, dataset_name=data, output_dir=os.path.join(out, "policy"), use_cpu=True, ddp_backend="gloo",
    per_device_train_batch_size=2, per_device_eval_batch_size=2, num_train_epochs=1, learning_rate=1e-3, alpha=1.0,
    logging_steps=1, ref_cache_dir=os.path.join(out, "cache"), disable_tqdm=True, train_sampling_strategy="sequential",
    seed=0, report_to="none",
)
assert cfg.world_size == 2, cfg.world_size  # really two processes
align(cfg)
score(ScoreConfig(scorer=scorer, dataset_name=scorer_data, output=os.path.join(out, "scored.jsonl"), device="cpu",
                  batch_size=3, shard_size=4))
eval_accuracy(EvalAccuracyConfig(scorer=scorer, dataset_name=scorer_data, output=os.path.join(out, "accuracy.json"),
                                 device="cpu", batch_size=3, dataset_split="train"))
fsdp_error = None
try:  # accelerate on CPU processes ignores FSDP and trains DDP: rdo must refuse instead
    align(AlignConfig(model_name_or_path=model, dataset_name=data, output_dir=os.path.join(out, "fsdp"), use_cpu=True,
                      ddp_backend="gloo", alpha=0.0, max_steps=1, report_to="none", disable_tqdm=True,
                      ref_cache_dir=os.path.join(out, "cache"), fsdp="full_shard"))
except ValueError as e:
    fsdp_error = str(e)
with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
    json.dump({"rank": rank, "world_size": torch.distributed.get_world_size(), "reference_rows_computed": computed,
               "rows_scored": scored, "fsdp_error": fsdp_error}, f)
