"""Bad input is reported as file, row and field, or skipped and counted — never silently lost."""

from __future__ import annotations

from collections import Counter


class DataError(ValueError):
    """A row that cannot be used, located precisely enough for the user to fix it."""

    def __init__(self, source: str, row: int, field: str, problem: str, hint: str = "", reason: str | None = None):
        # `reason` is the row-independent part of `problem` (no counts, no values): skips are counted by it.
        self.source, self.row, self.field, self.problem = source, row, field, problem
        self.reason = reason or problem
        msg = f"{source}, row {row}, field '{field}': {problem}"
        if hint:
            msg += f". {hint}"
        super().__init__(msg)


SKIP_HINT = "Fix the row, or pass --skip_invalid to drop such rows (they are counted and reported)"


class SkipReport:
    """Counts rows dropped under `--skip_invalid`, by reason, and keeps the first example of each."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, str] = {}

    def add(self, err: DataError) -> None:
        key = f"{err.field}: {err.reason}"
        self.counts[key] += 1
        self.examples.setdefault(key, str(err))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        if not self.total:
            return "no rows skipped"
        lines = [f"skipped {self.total} invalid row(s):"]
        lines += [f"  {n:6d}  {key}   (first: {self.examples[key]})" for key, n in self.counts.most_common()]
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {"total": self.total, "by_reason": dict(self.counts)}
