"""Resumable output: `<output>.shards/` holds one JSONL per finished chunk of work plus a manifest.

Used by every command that writes one entry per input row and may be killed part-way (`rdo score`,
`rdo generate`). Each shard is written atomically, so a killed run leaves only complete shards; the
manifest records what must not change between a killed run and its resumption (the settings that
change the values, never those that only change speed), and a mismatch refuses to mix the two
unless the caller asks to start over.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from rdo.utils import atomic


class Shards:
    """`<output>.shards/`: one JSONL per finished chunk, written atomically, plus a manifest of the run."""

    def __init__(self, output: Path, manifest: dict, overwrite: bool, key: str = "rdo_row"):
        self.dir = Path(output).with_name(Path(output).name + ".shards")
        self.key = key
        path = self.dir / "manifest.json"
        if path.exists():
            old = json.loads(path.read_text())
            if old != manifest:
                if not overwrite:
                    changed = sorted(k for k in set(old) | set(manifest) if old.get(k) != manifest.get(k))
                    raise ValueError(
                        f"{self.dir} holds shards of a different run (changed: {changed}). "
                        "Pass --overwrite to discard them, or delete the folder."
                    )
                shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic.clean_leftovers(self.dir)
        atomic.write_json(path, manifest)

    def done(self, name: str) -> bool:
        return (self.dir / f"{name}.jsonl").exists()

    def write(self, name: str, entries: list[dict]) -> None:
        atomic.write_jsonl(self.dir / f"{name}.jsonl", entries)  # a kill mid-write leaves only a tmp name, never read

    def read_all(self) -> dict:
        entries: dict = {}
        for path in sorted(self.dir.glob("*.jsonl")):
            for line in path.read_text(encoding="utf-8").splitlines():
                e = json.loads(line)
                entries[e[self.key] if isinstance(e[self.key], (int, str)) else tuple(e[self.key])] = e
        return entries

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
