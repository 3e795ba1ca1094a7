"""Judge replies on disk, one file per completed call, so a rerun or a resumed run pays for no call twice.

The key is the digest of what the reply depends on: the judge (base URL and model name, or a local
model's weights), the full messages and the decoding settings; never the API key. Each file is
written with `rdo.utils.atomic` (temporary name, fsync, rename), so a killed run leaves either the whole
entry or none; an entry whose stored key does not match its name is ignored and re-asked.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from rdo.utils import atomic
from rdo.utils.fingerprint import digest

log = logging.getLogger("rdo.eval")


class ReplyCache:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    @staticmethod
    def key(identity: dict, messages: list[dict], decoding: dict) -> str:
        return digest({"judge": identity, "messages": messages, "decoding": decoding})

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> str | None:
        path = self._path(key)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            log.warning("%s: unreadable cache entry, asking the judge again", path)
            return None
        if not isinstance(entry, dict) or entry.get("key") != key or not isinstance(entry.get("reply"), str):
            log.warning("%s: cache entry does not match its key, asking the judge again", path)
            return None
        return entry["reply"]

    def put(self, key: str, identity: dict, reply: str) -> None:
        path = self._path(key)
        atomic.write_json(path, {"key": key, "judge": identity, "reply": reply}, ensure_ascii=False)

    def clean(self) -> int:
        """Remove what killed writers left behind (temporary names no reader looks at); returns how many."""
        if not self.folder.is_dir():
            return 0
        return sum(len(atomic.clean_leftovers(sub)) for sub in self.folder.iterdir() if sub.is_dir())
