"""Run by tests/test_multiprocess.py under `torchrun --nproc_per_node 2`.

Records which (row, weight) pairs every rank's loss actually saw, so the test can check that each
coefficient stayed attached to its own row through the distributed sampler's shuffling and sharding,
and per-parameter checksums of the trained weights with how far they moved from the initial ones, so it
can check the ranks stayed in sync while training.
"""

import json
import os
import sys

from transformers import AutoModelForCausalLM

from rdo.train.align import align
from rdo.config import AlignConfig
from rdo.train.trainer import RDOTrainer

model, data, out = sys.argv[1:4]
seen, trainers = [], []
original = RDOTrainer.compute_loss


def recording_compute_loss(self, model, inputs, *args, **kwargs):
    if not trainers:
        trainers.append(self)
    seen.append({"rows": inputs["rdo_row"].tolist(), "weights": inputs["rdo_weight"].tolist()})
    return original(self, model, inputs, *args, **kwargs)


RDOTrainer.compute_loss = recording_compute_loss
cfg = AlignConfig(
    model_name_or_path=model, dataset_name=data, output_dir=out, use_cpu=True, ddp_backend="gloo",
    per_device_train_batch_size=4, num_train_epochs=2, learning_rate=1e-3, alpha=1.0, logging_steps=1,
    ref_cache_dir=os.path.join(out, "cache"), disable_tqdm=True, train_sampling_strategy="random", seed=0,
)
align(cfg)
trained = trainers[0].accelerator.unwrap_model(trainers[0].model)
sums = [float(p.detach().double().sum()) for p in trained.parameters()]  # one per parameter tensor
initial = AutoModelForCausalLM.from_pretrained(model)
# how far the least-moved parameter tensor moved: equal checksums on both ranks mean nothing if nothing trained
least_moved = min(float((a.detach() - b.detach()).abs().max()) for a, b in zip(trained.parameters(), initial.parameters()))
rank = int(os.environ["RANK"])
with open(os.path.join(out, f"seen-rank{rank}.json"), "w") as f:
    json.dump({"rank": rank, "world_size": cfg.world_size, "seen": seen, "sums": sums, "least_moved": least_moved}, f)
