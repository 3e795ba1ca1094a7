"""Load a preference dataset into canonical records, validating every row."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from rdo.data.errors import DataError, SkipReport
from rdo.data.formats import Normaliser, detect_format, kind_of
from rdo.data.io import read_rows


DUPLICATE = "duplicate id"


class _Duplicate(Exception):
    """A duplicate row dropped under `dedupe_ids` (counted, not an error)."""

    def __init__(self, err: DataError):
        self.err = err


def _check_unique(source: str, row: int, column: str, value, first_row_of: dict[str, int], dedupe: bool) -> None:
    key = json.dumps(value, sort_keys=True, default=str)
    first = first_row_of.setdefault(key, row)
    if first == row:
        return
    if dedupe:
        raise _Duplicate(DataError(source, row, column, f"duplicate of row {first} ({value!r}); the first was kept",
                                   reason="duplicate id, the first row kept (--dedupe_ids)"))
    raise DataError(
        source, row, column, f"the same id {value!r} as row {first}",
        "Remove or rename one of the two rows, or pass --dedupe_ids to keep the first of each id (the others are counted)",
        reason=DUPLICATE,
    )


@dataclass
class Loaded:
    """Validated canonical records plus what was learnt while loading them."""

    records: list[dict]
    fmt: str
    kind: str
    source: str
    skips: SkipReport = field(default_factory=SkipReport)


def load_records(
    source: str,
    *,
    split: str = "train",
    tokenizer=None,
    coef_column: str | None = None,
    score_columns: tuple[str, str] | None = None,
    skip_invalid: bool = False,
    prompt_only: bool = False,
    dedupe_ids: bool = False,
    id_column: str = "id",
) -> Loaded:
    """Read `source`, detect its format from the first row, normalise and validate every row.

    `coef_column` names a column every row must carry as a finite number (None: not required);
    ranked rows carry it as a K x K matrix, or leave it out so R comes from their scores.
    `score_columns` (chosen's, rejected's) instead fill `coef_column` of pair rows with their difference.
    Bad rows raise `DataError` (file, row, field) unless `skip_invalid`, which counts them instead.
    `prompt_only` also accepts rows with just a prompt (kind "prompt"; for commands that need no response).
    Two rows with the same `id_column` value are an error naming both rows (even with `skip_invalid`:
    neither row is invalid, and which one to keep is the user's call) unless `dedupe_ids`, which
    keeps the first and counts the others in the skip report.
    """
    skips = SkipReport()
    records: list[dict] = []
    normalise = None
    fmt = None
    first_row_of: dict[str, int] = {}  # id (as JSON) -> the row it was first seen on
    undetected: list[tuple[int, dict, str]] = []  # rows read before the format was known, that did not show it

    def take(row: int, raw) -> None:
        if isinstance(raw, DataError):  # the row could not even be read (e.g. a line that is not JSON)
            if not skip_invalid:
                raise raw
            skips.add(raw)
            return
        try:
            record = normalise(row, raw)
            if id_column in raw:
                _check_unique(source, row, id_column, raw[id_column], first_row_of, dedupe_ids)
            records.append(record)
        except _Duplicate as dup:
            skips.add(dup.err)
        except DataError as err:
            if not skip_invalid or err.reason == DUPLICATE:
                raise
            skips.add(err)

    for row, raw in read_rows(source, split):
        if normalise is None:
            # The first row that shows its format decides it; a broken row before it (say, one missing
            # 'chosen') is then reported against that format, with its field, instead of stopping
            # detection. Rows before it wait, so errors still come in line order.
            try:
                if isinstance(raw, DataError):
                    raise ValueError(str(raw))
                fmt = detect_format(raw, prompt_only)
            except ValueError as e:
                undetected.append((row, raw, str(e)))
                continue
            normalise = Normaliser(source, fmt, tokenizer=tokenizer, coef_column=coef_column, score_columns=score_columns)
            for early_row, early_raw, _ in undetected:
                take(early_row, early_raw)
        take(row, raw)
    if normalise is None and undetected:  # no row shows a format: report the first row as it is
        for row, raw, problem in undetected:
            if isinstance(raw, DataError):
                take(row, raw)  # raises, or counts it under --skip_invalid
            else:
                raise ValueError(f"{source}, row {row}: {problem}")
    if fmt is None and not skips.total:
        raise ValueError(f"{source}: no rows")
    if not records:
        raise ValueError(f"{source}: every row was invalid.\n{skips.summary()}")
    return Loaded(records=records, fmt=fmt, kind=kind_of(fmt), source=source, skips=skips)
