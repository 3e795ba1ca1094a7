"""Two generations files -> the same prompts answered by A and by B, and the vote rules that compare them.

Shared by `rdo eval judge` and `rdo eval human`:
- rows (rdo generate's JSONL) are matched by (id, sample_index) when every row has an `id`, else by
  (rdo_row, sample_index), else by (prompt, sample_index); a matched pair must share its prompt;
- a fixed random sample of the matched pairs by seed, kept in A's order;
- a majority vote per example over judges or annotators.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from dataclasses import dataclass

from rdo.data.errors import SKIP_HINT, DataError
from rdo.data.io import read_rows
from rdo.utils.fingerprint import digest

log = logging.getLogger("rdo.eval")

OUTCOMES = ("win", "tie", "loss")  # win = A better (the shape rdo.evaluate.stats.rate_cis returns)


@dataclass
class Example:
    """One prompt answered by A and by B."""

    key: str  # e.g. "id=p3/sample=0": how the rows were matched
    question: str  # the prompt as a reader sees it
    a: str
    b: str
    row_a: int
    row_b: int


def question_text(prompt) -> str:
    """A plain prompt as is; a message list as `role: content` turns (a lone user turn as its content)."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and all(isinstance(m, dict) and "content" in m for m in prompt):
        if len(prompt) == 1 and prompt[0].get("role", "user") == "user":
            return str(prompt[0]["content"])
        return "\n\n".join(f"{m.get('role', 'user')}: {m['content']}" for m in prompt)
    raise ValueError(f"prompt of type {type(prompt).__name__}: expected a string or a list of {{role, content}} messages")


def _read_generations(path: str) -> list[tuple[int, dict]]:
    rows = []
    for row, rec in read_rows(path):
        if isinstance(rec, DataError):
            raise rec
        for name in ("prompt", "response"):
            if name not in rec:
                raise DataError(path, row, name, "missing", "Is this an `rdo generate` output file?")
        if not isinstance(rec["response"], str):
            raise DataError(path, row, "response", f"expected a string, got {type(rec['response']).__name__}", SKIP_HINT)
        try:
            rec["_question"] = question_text(rec["prompt"])
        except ValueError as e:
            raise DataError(path, row, "prompt", str(e)) from None
        rows.append((row, rec))
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def _match_by(rows_a, rows_b) -> str:
    every = lambda col: all(col in r for _, r in rows_a) and all(col in r for _, r in rows_b)  # noqa: E731
    return "id" if every("id") else "rdo_row" if every("rdo_row") else "prompt"


def _keyed(path: str, rows, by: str) -> dict[str, tuple[int, dict]]:
    out: dict[str, tuple[int, dict]] = {}
    for row, rec in rows:
        ident = digest(rec["prompt"])[:16] if by == "prompt" else rec[by]
        key = f"{by}={ident}/sample={rec.get('sample_index', 0)}"
        if key in out:
            raise DataError(path, row, by, f"duplicate of row {out[key][0]} ({key})", "Each (prompt, sample_index) must appear once")
        out[key] = (row, rec)
    return out


def matched_examples(path_a: str, path_b: str) -> tuple[list[Example], dict]:
    """Examples answered by both files, in A's order, and what did not match: {"by", "a_only", "b_only"}."""
    rows_a, rows_b = _read_generations(path_a), _read_generations(path_b)
    by = _match_by(rows_a, rows_b)
    ka, kb = _keyed(path_a, rows_a, by), _keyed(path_b, rows_b, by)
    examples = []
    for key, (ra, a) in ka.items():
        if key not in kb:
            continue
        rb, b = kb[key]
        if a["prompt"] != b["prompt"]:
            raise ValueError(f"{path_a} row {ra} and {path_b} row {rb} share {key} but their prompts differ: "
                             "were both generated from the same prompts file?")
        examples.append(Example(key, a["_question"], a["response"], b["response"], ra, rb))
    info = {"by": by, "a_only": len(set(ka) - set(kb)), "b_only": len(set(kb) - set(ka))}
    if not examples:
        raise ValueError(f"{path_a} and {path_b} share no rows (matched by {by} and sample_index): "
                         "generate both from the same prompts file")
    if info["a_only"] or info["b_only"]:
        log.warning("%d row(s) only in %s and %d only in %s (matched by %s, sample_index): they are left out",
                    info["a_only"], path_a, info["b_only"], path_b, by)
    return examples, info


def sample_examples(examples: list[Example], num_samples: int, seed: int) -> list[Example]:
    """A fixed random subset of `num_samples` examples (all when fewer), in their original order."""
    if num_samples >= len(examples):
        return list(examples)
    keep = sorted(random.Random(seed).sample(range(len(examples)), num_samples))
    return [examples[i] for i in keep]


def majority(votes: list[str | None]) -> str | None:
    """The outcome most voters gave (voters without a verdict abstain); a draw between outcomes is a tie."""
    counts = Counter(v for v in votes if v is not None)
    if not counts:
        return None
    (top, n), *rest = counts.most_common()
    return "tie" if rest and rest[0][1] == n else top
