"""Run under torchrun by tests/test_generate.py: `rdo generate` in each process, then record what this rank did.

argv: RANKS_DIR generate <rdo generate flags...>
"""

import json
import sys
from pathlib import Path

import torch.distributed as dist

from rdo.cli import parse_config
from rdo.config import GenerateConfig
from rdo.evaluate.generate import generate_command

ranks_dir, command, *flags = sys.argv[1:]
assert command == "generate"
written: list[str] = []
generate_command(parse_config(GenerateConfig, flags, prog="rdo generate"), on_shard=written.append)
Path(ranks_dir).mkdir(parents=True, exist_ok=True)
info = {"rank": dist.get_rank(), "world_size": dist.get_world_size(), "shards_written": written}
(Path(ranks_dir) / f"rank{dist.get_rank()}.json").write_text(json.dumps(info))
dist.destroy_process_group()
