"""Load a preference dataset into canonical records, validating every row."""

from __future__ import annotations

from dataclasses import dataclass, field

from rdo.data.errors import DataError, SkipReport
from rdo.data.formats import Normaliser, detect_format, kind_of
from rdo.data.io import read_rows


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
    skip_invalid: bool = False,
    prompt_only: bool = False,
) -> Loaded:
    """Read `source`, detect its format from the first row, normalise and validate every row.

    `coef_column` names a column every row must carry as a finite number (None: not required);
    ranked rows carry it as a K x K matrix, or leave it out so R comes from their scores.
    Bad rows raise `DataError` (file, row, field) unless `skip_invalid`, which counts them instead.
    `prompt_only` also accepts rows with just a prompt (kind "prompt"; for commands that need no response).
    """
    skips = SkipReport()
    records: list[dict] = []
    normalise = None
    fmt = None
    for row, raw in read_rows(source, split):
        if isinstance(raw, DataError):  # the row could not even be read (e.g. a line that is not JSON)
            if not skip_invalid:
                raise raw
            skips.add(raw)
            continue
        if normalise is None:
            try:
                fmt = detect_format(raw, prompt_only)
            except ValueError as e:
                raise ValueError(f"{source}, row {row}: {e}") from None
            normalise = Normaliser(source, fmt, tokenizer=tokenizer, coef_column=coef_column)
        try:
            records.append(normalise(row, raw))
        except DataError as err:
            if not skip_invalid:
                raise
            skips.add(err)
    if fmt is None and not skips.total:
        raise ValueError(f"{source}: no rows")
    if not records:
        raise ValueError(f"{source}: every row was invalid.\n{skips.summary()}")
    return Loaded(records=records, fmt=fmt, kind=kind_of(fmt), source=source, skips=skips)
