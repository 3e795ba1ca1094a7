"""Read raw rows from local files, a `save_to_disk` folder, or a hub dataset id.

Every row comes back as `(row_number, dict)`, so later validation can say exactly where a problem
is. A row that cannot be read at all (a line that is not JSON, or not UTF-8) comes back as
`(row_number, DataError)`, so the caller decides whether to raise or skip it and reading goes on.

What "row" means (it is `rdo_row`, the key that follows a row everywhere):
- .jsonl: the physical line number, as an editor shows it (blank lines count, they are not rows);
- .csv:   the line on which the record starts (the header is line 1; a quoted cell may span lines);
- .json:  the 1-based position of the object in the list (a JSON file may be one long line);
- .parquet, save_to_disk folders, hub datasets: the 1-based position in the table.

Files written by editors work as they are: a UTF-8 byte-order mark is ignored, Windows line
endings (CRLF) are accepted.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Iterator

from rdo.data.errors import SKIP_HINT, DataError

LOCAL_SUFFIXES = {".jsonl", ".json", ".parquet", ".csv"}
BOM = b"\xef\xbb\xbf"  # the UTF-8 byte-order mark Windows tools write


def read_rows(source: str, split: str = "train") -> Iterator[tuple[int, dict | DataError]]:
    """Yield `(row, record)` pairs from `source`; `split` applies to folders and hub ids."""
    path = Path(source)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            yield from _read_jsonl(path)
        elif suffix == ".json":
            yield from _read_json(path)
        elif suffix == ".csv":
            yield from _read_csv(path)
        elif suffix == ".parquet":
            yield from _read_with_datasets(source, "parquet", split="train")
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


def _decode_line(path: Path, row: int, raw: bytes) -> str | DataError:
    """One line's text; a line that is not UTF-8 is an error naming the line and the first bad byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return DataError(
            str(path), row, "<line>", f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at byte {e.start + 1} of the line)",
            "Re-save the file as UTF-8, or pass --skip_invalid to drop such rows (they are counted and reported)",
            reason="not valid UTF-8",
        )


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict | DataError]]:
    with path.open("rb") as f:  # bytes, so one undecodable line is one bad row, not a failed file
        for row, raw in enumerate(f, start=1):  # row = the editor's line number
            if row == 1:
                raw = raw.removeprefix(BOM)
            line = _decode_line(path, row, raw)
            if isinstance(line, DataError):
                yield row, line
                continue
            if not line.strip():
                continue
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
    raw = path.read_bytes().removeprefix(BOM)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:  # one document: it cannot be read row by row
        line = raw[: e.start].count(b"\n") + 1
        raise ValueError(f"{path}: not valid UTF-8 (byte 0x{raw[e.start]:02x} on line {line}); re-save the file as UTF-8") from None
    try:
        data = json.loads(text)
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


def _read_csv(path: Path) -> Iterator[tuple[int, dict | DataError]]:
    """CSV through `datasets` (typed columns), each record numbered by the line it starts on."""
    import csv

    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ValueError(f"{path}: not valid UTF-8 (byte 0x{raw[e.start]:02x} on line {line}); re-save the file as UTF-8") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    starts = []  # the line each record starts on, header first; blank lines are no records (as in pandas)
    while True:
        first = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise ValueError(f"{path}, line {first}: not valid CSV ({e})") from None
        if fields:
            starts.append(first)
    records = list(_read_with_datasets(str(path), "csv", split="train", encoding="utf-8-sig"))
    lines = starts[1:] if len(starts) == len(records) + 1 else [i + 1 for i, _ in records]  # header + records
    for line, (_, record) in zip(lines, records):
        yield line, record


def _read_with_datasets(source: str, builder: str, split: str, **kwargs) -> Iterator[tuple[int, dict]]:
    import datasets

    ds = datasets.load_dataset(builder, data_files=source, split=split, **kwargs)
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
