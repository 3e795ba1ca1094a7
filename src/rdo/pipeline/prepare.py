"""`rdo prepare`: one dataset -> one JSONL in a run folder, the input every later stage reads.

The rows are copied as read (every column kept, in input order), so the file's digest is the key of
everything downstream: change the data and every stage after `prepare` reruns. `--adapter tldr`
converts OpenAI's summarize_from_feedback comparisons, a format the data layer does not read, into
standard prompt/chosen/rejected rows.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from itertools import islice

from rdo.utils import atomic
from rdo.config import PrepareConfig
from rdo.data.errors import SKIP_HINT, DataError
from rdo.data.io import read_rows

log = logging.getLogger("rdo.prepare")

# The prompt layout of Stiennon et al. (2020) as used by TRL and OpenRLHF for TL;DR.
TLDR_PROMPT = "SUBREDDIT: r/{subreddit}\nTITLE: {title}\nPOST: {post}\nTL;DR:"


def tldr_row(source: str, row: int, raw: dict) -> dict:
    """summarize_from_feedback 'comparisons': {info: {post, title, subreddit, id}, summaries: [{text}, {text}], choice}."""
    info, summaries, choice = raw.get("info"), raw.get("summaries"), raw.get("choice")
    if not isinstance(info, dict):
        raise DataError(source, row, "info", "expected an object with post, title and subreddit", SKIP_HINT)
    for f in ("post", "title"):
        if not isinstance(info.get(f), str) or not info[f].strip():
            raise DataError(source, row, f"info.{f}", "missing or empty", SKIP_HINT)
    if not (isinstance(summaries, list) and len(summaries) == 2
            and all(isinstance(s, dict) and isinstance(s.get("text"), str) and s["text"].strip() for s in summaries)):
        raise DataError(source, row, "summaries", "expected a list of two {text: ...} objects with non-empty text", SKIP_HINT)
    if choice not in (0, 1) or isinstance(choice, bool):
        raise DataError(source, row, "choice", f"expected 0 or 1, got {choice!r}", SKIP_HINT)
    prompt = TLDR_PROMPT.format(subreddit=info.get("subreddit") or "unknown", title=info["title"].strip(), post=info["post"].strip())
    out = {"id": info.get("id", row), "prompt": prompt,
           "chosen": " " + summaries[choice]["text"].strip(), "rejected": " " + summaries[1 - choice]["text"].strip()}
    if out["chosen"] == out["rejected"]:
        raise DataError(source, row, "summaries", "the two summaries are identical", SKIP_HINT)
    extra = raw.get("extra")
    if isinstance(extra, dict) and extra.get("confidence") is not None:
        out["confidence"] = extra["confidence"]
    return out


ADAPT = {"none": lambda source, row, raw: raw, "tldr": tldr_row}


def source_rows(cfg: PrepareConfig) -> Iterator[tuple[int, dict | DataError]]:
    """The raw rows of the dataset; a hub configuration name (`--dataset_config`) goes to `datasets` directly."""
    if cfg.dataset_config is None:
        yield from read_rows(cfg.dataset_name, cfg.dataset_split)
        return
    import datasets

    try:
        ds = datasets.load_dataset(cfg.dataset_name, cfg.dataset_config, split=cfg.dataset_split)
    except Exception as e:  # offline, misspelt id, gated dataset...
        raise ValueError(f"{cfg.dataset_name} ({cfg.dataset_config}): loading it as a hub dataset failed: {e}") from e
    for i, record in enumerate(ds, start=1):
        yield i, record


def prepared_rows(cfg: PrepareConfig, limit: int | None = None) -> list[dict]:
    """The first `limit` (or `cfg.max_rows`, or all) rows, converted; a row that cannot be read or converted stops here."""
    adapt = ADAPT[cfg.adapter]
    rows = []
    n = min(x for x in (limit, cfg.max_rows) if x is not None) if (limit or cfg.max_rows) else None
    for row, raw in islice(source_rows(cfg), n):
        if isinstance(raw, DataError):
            raise raw
        rows.append(adapt(cfg.dataset_name, row, raw))
    if not rows:
        raise ValueError(f"{cfg.dataset_name}: no rows")
    return rows


def prepare(cfg: PrepareConfig) -> dict:
    """Write `cfg.output`; returns {"rows", "output"}."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    rows = prepared_rows(cfg)
    atomic.write_jsonl(cfg.output, rows)
    log.info("wrote %s (%d rows from %s, adapter %s)", cfg.output, len(rows), cfg.dataset_name, cfg.adapter)
    return {"rows": len(rows), "output": cfg.output}
