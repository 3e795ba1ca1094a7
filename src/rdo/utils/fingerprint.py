"""Content fingerprints: what every cache and every skipped stage is keyed by (never a path or a file's existence).

- `digest(obj)`: a stable hash of any JSON-able value (settings, token ids, rows).
- `file_digest(path)`: a hash of a file's bytes. Hashing multi-GB weights on every run would be slow,
  so a file's digest is memoised by (real path, size, mtime, inode) in `$RDO_CACHE/fingerprints.json`:
  a rewrite of the file changes its mtime and size-or-inode, so a stale memo is never used; the
  memo only saves re-reading bytes that are known unchanged.
- `model_fingerprint(name_or_path)`: a local folder -> digest of its config and every weight file's
  bytes; a hub id -> its resolved commit sha (or the local snapshot it resolves to offline).
- `tokenizer_fingerprint(tokenizer)`: vocabulary, merges, normaliser, special tokens and chat template.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
CONFIG_FILES = ("config.json", "generation_config.json", "adapter_config.json", "rdo.json")
_CHUNK = 8 << 20


def digest(obj) -> str:
    """sha256 of the canonical JSON of `obj` (sorted keys; non-JSON values by their str)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str, ensure_ascii=False).encode()).hexdigest()


def _memo_path() -> Path:
    return Path(os.environ.get("RDO_CACHE", Path.home() / ".cache" / "rdo")) / "fingerprints.json"


def file_digest(path: str | Path) -> str:
    """sha256 of the file's bytes, memoised by (real path, size, mtime_ns, inode)."""
    path = Path(path).resolve()
    st = path.stat()
    stamp = f"{path}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"
    memo_file = _memo_path()
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        memo = {}
    if stamp in memo:
        return memo[stamp]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    value = h.hexdigest()
    memo = {k: v for k, v in memo.items() if not k.startswith(f"{path}|")}  # drop this file's stale stamps
    memo[stamp] = value
    try:
        from rdo.utils import atomic

        atomic.write_json(memo_file, memo)
    except OSError:  # a read-only cache only costs a re-hash next time
        pass
    return value


def model_fingerprint(name_or_path: str, revision: str | None = None) -> str:
    """What identifies a model's content: a local folder's config + weight bytes, or a hub commit."""
    folder = Path(name_or_path)
    if folder.is_dir():
        parts = {}
        for p in sorted(folder.rglob("*")):
            if p.is_file() and (p.suffix in WEIGHT_SUFFIXES or p.name in CONFIG_FILES):
                parts[str(p.relative_to(folder))] = file_digest(p)
        if not any(k.endswith(WEIGHT_SUFFIXES) for k in parts):
            raise ValueError(f"{name_or_path}: no weight files (*.safetensors) to fingerprint")
        return digest(parts)
    return digest({"hub": name_or_path, "commit": _hub_commit(name_or_path, revision)})


def _hub_commit(repo_id: str, revision: str | None) -> str:
    """The commit a hub id resolves to: asked online, else the cached snapshot's folder name (offline)."""
    from huggingface_hub import snapshot_download

    try:
        local = snapshot_download(repo_id, revision=revision, allow_patterns=["config.json"], local_files_only=True)
    except Exception:
        local = None
    if local is None or os.environ.get("HF_HUB_OFFLINE") != "1":
        try:
            from huggingface_hub import HfApi

            return HfApi().model_info(repo_id, revision=revision).sha
        except Exception as e:
            if local is None:
                raise ValueError(f"{repo_id}: cannot resolve its hub commit to key the cache ({e})") from e
    return Path(local).name  # snapshots/<commit sha>


def tokenizer_fingerprint(tokenizer) -> str:
    """Everything that changes token ids: the tokenizer model, special tokens, BOS/EOS handling, chat template."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return digest({
        "backend": backend.to_str() if backend is not None else repr(tokenizer.get_vocab()),
        "special": tokenizer.special_tokens_map,
        "added": {str(k): str(v) for k, v in getattr(tokenizer, "added_tokens_decoder", {}).items()},
        "chat_template": getattr(tokenizer, "chat_template", None),
        "class": type(tokenizer).__name__,
    })
