"""Work split across processes under `torchrun` / `accelerate launch`, for the commands that write one
entry per input row (`rdo generate`; `rdo score` can use the same).

The pattern: every process takes `my_share` of a fixed list of work units (shards), writes its
results where all can read them, meets the others at `barrier`, and the main process merges the
results in input order. Nothing here depends on how many processes there are, so the merged output
of N processes equals that of one. A single process (no launcher) needs no process group at all.
"""

from __future__ import annotations

import datetime
import json
import os
from contextlib import contextmanager
from typing import Iterable, Iterator, Sequence, TypeVar

import torch

T = TypeVar("T")
# Ranks wait for the slowest one at the final barrier; a long generation must not hit the
# default 30-minute collective timeout.
TIMEOUT = datetime.timedelta(hours=24)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


# --- which commands a launcher may start (torchrun / accelerate launch set WORLD_SIZE > 1) ---------------

TRAINER_COMMANDS = ("align", "train-rm", "train-diff")  # DDP / DeepSpeed / FSDP through the Trainer
SPLIT_COMMANDS = ("score", "eval accuracy", "generate")  # each process takes its share of shards (below)


def check_launch(command: str) -> None:
    """Under a launcher, a command that neither trains through the Trainer nor splits its work would run
    once per process, every copy writing the same outputs: refuse it. (Trainer commands are checked by
    `check_trainer_launch`, which needs their --use_cpu.)"""
    if world_size() > 1 and command not in TRAINER_COMMANDS + SPLIT_COMMANDS:
        raise ValueError(f"this command runs in one process, but a launcher started {world_size()} (WORLD_SIZE="
                         f"{world_size()}): run it without torchrun / accelerate launch.")


def check_trainer_launch(use_cpu: bool) -> None:
    """On a machine without GPUs, transformers runs each launched process as its own single-process training
    (it only warns) unless --use_cpu is set, so N copies train and write the same --output_dir: refuse."""
    accelerator = torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available()
    use_cpu = use_cpu or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")  # accelerate's use_cpu: true
    if world_size() > 1 and not use_cpu and not accelerator:
        raise ValueError(f"a launcher started {world_size()} processes (WORLD_SIZE={world_size()}) on a machine without GPUs: "
                         "add --use_cpu true to train them as one distributed (gloo) job.")


def zero_stage(deepspeed) -> int | None:
    """The DeepSpeed ZeRO stage a training run will use: from --deepspeed (a JSON file or a dict), else from
    the config `accelerate launch` passes in the environment; None without DeepSpeed."""
    config = deepspeed
    if isinstance(config, str) and config:
        try:
            config = json.loads(open(config).read()) if os.path.isfile(config) else json.loads(config)
        except ValueError:
            raise ValueError(f"--deepspeed {deepspeed}: not a DeepSpeed JSON file or JSON text") from None
    if isinstance(config, dict):
        stage = (config.get("zero_optimization") or {}).get("stage")
        return int(stage) if isinstance(stage, (int, str)) and str(stage).isdigit() else None
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true"):
        stage = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "")
        if stage.isdigit():
            return int(stage)
        path = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")
        return zero_stage(path) if path else None
    return None


def init() -> None:
    """Join the process group the launcher set up (gloo on CPU, nccl on GPUs); a no-op for one process."""
    import torch.distributed as dist

    if world_size() > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend, timeout=TIMEOUT)


def device(requested: str = "auto") -> torch.device:
    """One device per local rank: `auto` is cuda:<local rank> when GPUs exist, else the CPU."""
    if requested == "auto":
        return torch.device(f"cuda:{local_rank() % torch.cuda.device_count()}") if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(requested)


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def my_share(items: Sequence[T]) -> list[T]:
    """This process's items: every world_size-th from its rank (strided, so length-sorted work balances)."""
    return list(items[rank() :: world_size()])


@contextmanager
def main_first() -> Iterator[None]:
    """Run the body on the main process, then on the others (e.g. creating a shared folder), then meet."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()
    barrier()  # nobody starts the work before everyone has finished the body


def gather(obj) -> list:
    """Every process's `obj`, in rank order (a one-element list for a single process)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def in_input_order(entries: Iterable[dict], order: Sequence, key) -> list[dict]:
    """`entries` (from any process, in any order) sorted as `order` lists their keys; a key missing or
    given twice is an error, never a silently shorter or doubled output."""
    by_key: dict = {}
    for e in entries:
        k = key(e)
        if k in by_key:
            raise RuntimeError(f"entry {k!r} was produced twice")
        by_key[k] = e
    missing = [k for k in order if k not in by_key]
    if missing:
        raise RuntimeError(f"{len(missing)} entr(ies) missing (first: {missing[0]!r})")
    extra = len(by_key) - len(order)
    if extra:
        raise RuntimeError(f"{extra} entr(ies) not in the input")
    return [by_key[k] for k in order]


def close() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
