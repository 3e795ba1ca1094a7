"""Artifacts appear whole or not at all: write to a temporary name in the same folder, fsync, rename.

A reader (or a resumed run) never sees a half-written file; what a killed writer leaves behind is a
`*.tmp-<pid>` name that no reader looks at and `clean_leftovers` removes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

log = logging.getLogger(__name__)

TMP_TAG = ".tmp-"


def _tmp_name(path: Path) -> Path:
    return path.with_name(f"{path.name}{TMP_TAG}{os.getpid()}")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some filesystems do not open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write `path`'s content to; on success it is fsynced and renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        yield tmp
        move_into_place(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def fsync_tree(path: str | Path) -> None:
    """fsync a file, or every file and folder under a folder, so a rename publishes durable bytes."""
    path = Path(path)
    if path.is_file():
        with open(path, "rb") as f:
            os.fsync(f.fileno())
        return
    for root, _, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(Path(root))


def move_into_place(tmp: str | Path, path: str | Path) -> None:
    """fsync `tmp` (a file or a finished folder) and rename it to `path`, replacing what is there.

    A folder that already exists is moved aside first (a folder cannot be renamed over a non-empty one),
    so for a moment `path` is absent, never half-written.
    """
    tmp, path = Path(tmp), Path(path)
    fsync_tree(tmp)
    if tmp.is_dir() and path.is_dir():
        old = path.with_name(f"{path.name}{TMP_TAG}old-{os.getpid()}")
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)
    _fsync_dir(path.parent)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, obj, **kw) -> None:
    write_text(path, json.dumps(obj, indent=2, default=str, **kw) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")


def clean_leftovers(folder: str | Path) -> list[Path]:
    """Remove what killed atomic writers left in `folder` (not recursive), logging each; returns what was removed."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        if TMP_TAG in p.name:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            removed.append(p)
            log.warning("removed %s, left by an interrupted write", p)
    return removed
