"""Read raw rows from local files, a `save_to_disk` folder, or a hub dataset id.

Every row comes back as `(row_number, dict)` with 1-based row numbers, so later validation can
say exactly where a problem is. A row that cannot be read at all (a line that is not JSON) comes back
as `(row_number, DataError)`, so the caller decides whether to raise or skip it and reading goes on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from rdo.data.errors import SKIP_HINT, DataError

LOCAL_SUFFIXES = {".jsonl", ".json", ".parquet", ".csv"}


def read_rows(source: str, split: str = "train") -> Iterator[tuple[int, dict | DataError]]:
    """Yield `(row, record)` pairs from `source`; `split` applies to folders and hub ids."""
    path = Path(source)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            yield from _read_jsonl(path)
        elif suffix == ".json":
            yield from _read_json(path)
        elif suffix in (".parquet", ".csv"):
            yield from _read_with_datasets(source, suffix.lstrip("."), split="train")
        else:
            raise ValueError(
                f"{source}: unsupported file type '{suffix}'. Use one of {sorted(LOCAL_SUFFIXES)}, "
                "a datasets.save_to_disk folder, or a hub dataset id."
            )
    elif path.is_dir():
        yield from _read_saved_dataset(path, split)
    elif path.suffix.lower() in LOCAL_SUFFIXES or source.startswith((".", "/")):
        raise FileNotFoundError(f"{source}: no such file")
    else:
        yield from _read_hub(source, split)


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict | DataError]]:
    with path.open(encoding="utf-8") as f:
        row = 0
        for line in f:
            if not line.strip():
                continue
            row += 1
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                yield row, DataError(
                    str(path), row, "<line>", f"not valid JSON ({e.msg} at column {e.colno})", SKIP_HINT, reason="not valid JSON"
                )
                continue
            if not isinstance(record, dict):
                yield row, DataError(str(path), row, "<line>", f"expected a JSON object, got {type(record).__name__}", SKIP_HINT)
                continue
            yield row, record


def _read_json(path: Path) -> Iterator[tuple[int, dict | DataError]]:
    with path.open(encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    if isinstance(data, dict):  # {"train": [...]} or {"data": [...]}
        lists = [v for v in data.values() if isinstance(v, list)]
        data = lists[0] if len(lists) == 1 else None
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of rows (or an object holding exactly one list)")
    for i, record in enumerate(data, start=1):
        if not isinstance(record, dict):
            yield i, DataError(str(path), i, "<row>", f"expected a JSON object, got {type(record).__name__}", SKIP_HINT)
            continue
        yield i, record


def _read_with_datasets(source: str, builder: str, split: str) -> Iterator[tuple[int, dict]]:
    import datasets

    ds = datasets.load_dataset(builder, data_files=source, split=split)
    for i, record in enumerate(ds, start=1):
        yield i, _clean_missing(record)


def _read_saved_dataset(path: Path, split: str) -> Iterator[tuple[int, dict]]:
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise ValueError(f"{path}: no split '{split}' (has {list(ds)}); pass --dataset_split")
        ds = ds[split]
    for i, record in enumerate(ds, start=1):
        yield i, _clean_missing(record)


def _read_hub(source: str, split: str) -> Iterator[tuple[int, dict]]:
    import datasets

    try:
        ds = datasets.load_dataset(source, split=split)
    except Exception as e:  # offline, misspelt id, gated dataset...
        raise ValueError(
            f"{source}: not a local file or folder, and loading it as a hub dataset failed: {e}"
        ) from e
    for i, record in enumerate(ds, start=1):
        yield i, _clean_missing(record)


def _clean_missing(record: dict) -> dict:
    """Parquet/CSV give None for empty cells; treat that as a missing field."""
    return {k: v for k, v in record.items() if v is not None}
