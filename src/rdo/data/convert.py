"""Pair records for methods that train on another record kind, and KTO's mismatched completions.

- RRHF takes a pair as a ranked row with K = 2: responses [rejected, chosen], scores [0, 1], and the
  pair's coefficient R as the matrix [[0, R], [-R, 0]] (entry [i][j] = R for "j beats i").
- KTO takes a pair as two pointwise examples, (prompt, chosen, desirable) and (prompt, rejected,
  undesirable). Both keep the pair's `rdo_row` and coefficient, so the pair's weight stays on its
  own two examples; `rdo_example` (0 = chosen, 1 = rejected) tells them apart.
"""

from __future__ import annotations

import random


def row_key(d: dict) -> tuple[int, int]:
    """The unique key of a record or feature: its source row, and which example of that row."""
    return d["rdo_row"], d.get("rdo_example", 0)


def token_ids_digest(features: list[dict]) -> str:
    """A digest of every feature's row key and token ids (`*_ids` fields), in any row order."""
    from rdo.utils.fingerprint import digest

    return digest(sorted(digest([list(row_key(f)), {k: v for k, v in f.items() if k.endswith("_ids")}]) for f in features))


def pair_to_ranked(record: dict, coef_column: str | None) -> dict:
    out = {k: v for k, v in record.items() if k not in ("chosen", "rejected")}
    out["responses"] = [record["rejected"], record["chosen"]]
    out["scores"] = [0.0, 1.0]
    if coef_column is not None and coef_column in record:
        r = record[coef_column]
        out[coef_column] = [[0.0, r], [-r, 0.0]]
    return out


def pair_to_unpaired(record: dict) -> list[dict]:
    base = {k: v for k, v in record.items() if k not in ("chosen", "rejected")}
    return [
        {**base, "completion": record["chosen"], "label": True, "rdo_example": 0},
        {**base, "completion": record["rejected"], "label": False, "rdo_example": 1},
    ]


def convert_records(records: list[dict], src: str, dst: str, coef_column: str | None = None) -> list[dict]:
    """Records of kind `src` as records of kind `dst` (unchanged when they are the same kind)."""
    if src == dst:
        return records
    if (src, dst) == ("pair", "ranked"):
        return [pair_to_ranked(r, coef_column) for r in records]
    if (src, dst) == ("pair", "unpaired"):
        return [ex for r in records for ex in pair_to_unpaired(r)]
    raise ValueError(f"cannot convert {src} records to {dst} records")


def assign_kl_completions(features: list[dict], seed: int) -> list[dict]:
    """Give every encoded unpaired example a fixed mismatched completion, `kl_completion_ids`.

    Source rows are put in a seeded random cycle; an example of row r takes the completion of the
    example with the same `rdo_example` index in the next row of the cycle. So y' always comes
    from another row (another prompt, unless two rows share one), and over the dataset each
    completion is used as some example's y' exactly once when rows hold equally many examples.
    """
    by_row: dict[int, list[dict]] = {}
    for f in features:
        by_row.setdefault(f["rdo_row"], []).append(f)
    if len(by_row) < 2:
        raise ValueError(
            "KTO estimates its KL reference point from completions of *other* rows, so it needs examples "
            f"from at least 2 rows; the data has {len(by_row)}"
        )
    for examples in by_row.values():
        examples.sort(key=lambda f: f.get("rdo_example", 0))
    order = sorted(by_row)
    random.Random(seed).shuffle(order)
    following = {r: order[(i + 1) % len(order)] for i, r in enumerate(order)}
    out = []
    for f in features:
        donors = by_row[following[f["rdo_row"]]]
        donor = donors[f.get("rdo_example", 0) % len(donors)]
        kl = donor["completion_ids"]
        out.append({**f, "kl_completion_ids": kl, "length": max(f["length"], len(f["prompt_ids"]) + len(kl))})
    return out
