"""Every supported row format -> one canonical record.

Canonical records (plain dicts, so they go straight into a `datasets.Dataset`):

- pair:     {"prompt", "chosen", "rejected"}                 (DPO, IPO, SimPO, KTO after unpairing)
- ranked:   {"prompt", "responses": [...], "scores": [...]}  (RRHF)
- unpaired: {"prompt", "completion", "label": bool}           (KTO)
- prompt:   {"prompt"}                                        (`rdo generate` only: rows with nothing to compare)

Each also carries `rdo_row` (the source row as `rdo.data.io` numbers it: for JSONL the editor's
line number; the key that follows the row everywhere) and every other column of the input
untouched — the coefficient column and any id in particular. Conversational rows also carry
`rdo_chat: True`: their strings were rendered by the chat template, so each response already ends
as the template ends an assistant turn (`rdo.data.tokenize` then appends no EOS).

Accepted inputs: TRL standard and conversational preference rows, Anthropic HH raw transcripts
(`chosen`/`rejected` only), Dahoas rm-static (`prompt`, `response`, `chosen`, `rejected`), ranked
multi-response rows (`prompt` or `query`, `responses`, `scores`) and unpaired KTO rows.
"""

from __future__ import annotations

import math
from typing import Any

from rdo.data.chat import render_prompt, render_response
from rdo.data.errors import SKIP_HINT, DataError

CHAT_KEY = "rdo_chat"  # marks records whose responses the chat template rendered (ends of turns included)

HH_ASSISTANT = "\n\nAssistant:"
KINDS = ("pair", "ranked", "unpaired", "prompt")


def detect_format(record: dict, prompt_only: bool = False) -> str:
    """Name the row format from its keys: standard, conversational, hh, ranked or unpaired
    (and, when `prompt_only`, `prompt` for rows that hold just a prompt)."""
    keys = set(record)
    if "responses" in keys and "scores" in keys:
        return "ranked"
    if "completion" in keys and "label" in keys:
        return "unpaired"
    if {"chosen", "rejected"} <= keys:
        if "prompt" not in keys:  # the prompt is inside the transcripts
            return "conversational" if isinstance(record["chosen"], list) else "hh"
        return "conversational" if isinstance(record["prompt"], list) else "standard"
    if prompt_only and "prompt" in keys:
        return "prompt"
    raise ValueError(
        f"cannot tell the row format from its columns {sorted(keys)}; expected one of: "
        "prompt/chosen/rejected, chosen/rejected (HH transcripts), prompt/responses/scores, "
        "prompt/completion/label"
    )


def kind_of(fmt: str) -> str:
    return {"ranked": "ranked", "unpaired": "unpaired", "prompt": "prompt"}.get(fmt, "pair")


class Normaliser:
    """Turns raw rows of one format into canonical records, raising `DataError` on bad rows."""

    def __init__(self, source: str, fmt: str, tokenizer=None, coef_column: str | None = None,
                 score_columns: tuple[str, str] | None = None):
        if fmt == "conversational" and (tokenizer is None or not getattr(tokenizer, "chat_template", None)):
            raise ValueError(
                f"{source}: conversational rows need a tokenizer with a chat template to render them; "
                "the model's tokenizer has none. Set one (tokenizer.chat_template) or convert the data to strings."
            )
        if score_columns is not None and kind_of(fmt) != "pair":
            raise ValueError(f"{source}: {fmt} rows are not pairs; R from two score columns {list(score_columns)} needs "
                             "prompt/chosen/rejected rows" + (" (ranked rows take R from their own `scores`)" if fmt == "ranked" else ""))
        if score_columns is not None and coef_column is None:
            raise ValueError("score_columns give R, so they need the coefficient column to put it in")
        self.source, self.fmt, self.tokenizer, self.coef_column = source, fmt, tokenizer, coef_column
        self.score_columns = score_columns

    def __call__(self, row: int, raw: dict) -> dict:
        out = {k: v for k, v in raw.items()}  # pass-through columns stay untouched
        out["rdo_row"] = row
        if self.fmt == "standard":
            for f in ("prompt", "chosen", "rejected"):
                out[f] = self._text(row, raw, f)
        elif self.fmt == "conversational":
            out.update(self._render_conversation(row, raw))
            out[CHAT_KEY] = True  # its responses already end as the template ends a turn (rdo.data.tokenize)
        elif self.fmt == "hh":
            out.update(self._split_hh(row, raw))
        elif self.fmt == "ranked":
            out.update(self._ranked(row, raw))
        elif self.fmt == "unpaired":
            out["prompt"] = self._text(row, raw, "prompt")
            out["completion"] = self._text(row, raw, "completion")
            out["label"] = self._label(row, raw)
        elif self.fmt == "prompt":
            out["prompt"] = self._prompt_only(row, raw)
        if self.fmt in ("standard", "conversational", "hh") and out["chosen"] == out["rejected"]:
            raise DataError(self.source, row, "rejected", "identical to 'chosen'; a pair needs two different responses", SKIP_HINT)
        if self.score_columns is not None:
            out[self.coef_column] = self._score_difference(row, raw)
        elif self.coef_column is not None:
            self._check_coef(row, raw)
        return out

    # -- field checks -------------------------------------------------------------------------

    def _text(self, row: int, raw: dict, field: str) -> str:
        value = raw.get(field)
        if value is None:
            raise DataError(self.source, row, field, "missing", SKIP_HINT)
        if not isinstance(value, str):
            raise DataError(self.source, row, field, f"expected a string, got {type(value).__name__}", SKIP_HINT)
        if not value.strip():
            raise DataError(self.source, row, field, "empty", SKIP_HINT)
        return value

    def _label(self, row: int, raw: dict) -> bool:
        value = raw.get("label")
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise DataError(self.source, row, "label", f"expected true/false, got {value!r}", SKIP_HINT, reason="expected true/false")

    def _check_coef(self, row: int, raw: dict) -> None:
        value = raw.get(self.coef_column)
        if value is None:
            if self.fmt == "ranked":  # R then comes from the reward model's scores: R_ij = s_j - s_i
                return
            fix = ("; or train the plain method with --alpha 0, or score the pairs the rows came from with `rdo score` "
                   "and train KTO on the scored pairs" if self.fmt == "unpaired" else "; or score the data with `rdo score`, "
                   "or take R from the data's own scores with --score_chosen_column / --score_rejected_column")
            raise DataError(self.source, row, self.coef_column, "missing coefficient", SKIP_HINT + fix)
        if self.fmt == "ranked":  # one R per ordered pair: a K x K matrix, [i][j] = R for "j beats i"
            k = len(raw["responses"])
            if not (isinstance(value, list) and len(value) == k and all(isinstance(v, list) and len(v) == k for v in value)):
                raise DataError(
                    self.source, row, self.coef_column,
                    f"expected a {k} x {k} list of lists (one per ordered pair of the {k} responses), got {value!r}", SKIP_HINT,
                )
            values = [v for line in value for v in line]
        else:
            values = [value]
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise DataError(self.source, row, self.coef_column, f"expected a number, got {v!r}", SKIP_HINT, reason="expected a number")
            if not math.isfinite(v):
                raise DataError(self.source, row, self.coef_column, f"coefficient is {v}", SKIP_HINT)

    def _score_difference(self, row: int, raw: dict) -> float:
        """R = the chosen response's score - the rejected one's, from the row's two score columns."""
        if self.coef_column in raw:
            raise DataError(self.source, row, self.coef_column,
                            f"present, but R is taken from the score columns {list(self.score_columns)}; R must come from one source",
                            "Drop --score_chosen_column / --score_rejected_column to use this column, or remove it from the data")
        scores = []
        for col in self.score_columns:
            v = raw.get(col)
            if v is None:
                raise DataError(self.source, row, col, "missing score", SKIP_HINT + "; or name the data's score columns with "
                                "--score_chosen_column / --score_rejected_column", reason="missing score")
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise DataError(self.source, row, col, f"expected a finite number, got {v!r}", SKIP_HINT, reason="expected a finite number")
            scores.append(float(v))
        return scores[0] - scores[1]

    # -- formats ------------------------------------------------------------------------------

    def _prompt_only(self, row: int, raw: dict) -> str:
        """A prompt-only row: a string, or a message list rendered with the generation prompt."""
        value = raw.get("prompt")
        if not isinstance(value, list):
            return self._text(row, raw, "prompt")
        if not value or not all(isinstance(m, dict) and isinstance(m.get("content"), str) and "role" in m for m in value):
            raise DataError(self.source, row, "prompt", "expected a string or a non-empty list of {role, content} messages", SKIP_HINT)
        if self.tokenizer is None or not getattr(self.tokenizer, "chat_template", None):
            raise DataError(self.source, row, "prompt", "a message list needs a tokenizer with a chat template to render it")
        return render_prompt(self.tokenizer, value)

    def _render_conversation(self, row: int, raw: dict) -> dict[str, str]:
        """Render message lists with the chat template; a response is the text after the prompt."""
        tok = self.tokenizer
        if "prompt" not in raw:
            raw = self._split_implicit_prompt(row, raw)
        for f in ("prompt", "chosen", "rejected"):
            msgs = raw.get(f)
            if not isinstance(msgs, list) or not msgs or not all(
                isinstance(m, dict) and isinstance(m.get("content"), str) and "role" in m for m in msgs
            ):
                raise DataError(self.source, row, f, "expected a non-empty list of {role, content} messages", SKIP_HINT)
            if f != "prompt" and not any(m["content"].strip() for m in msgs):
                raise DataError(self.source, row, f, "empty", SKIP_HINT)
        out = {}
        for f in ("chosen", "rejected"):
            try:
                out["prompt"], out[f] = render_response(tok, raw["prompt"], raw[f])
            except ValueError as e:
                raise DataError(self.source, row, f, str(e)) from None
        return out

    def _split_implicit_prompt(self, row: int, raw: dict) -> dict:
        """TRL's implicit-prompt rows: the prompt is the messages chosen and rejected share."""
        chosen, rejected = raw.get("chosen"), raw.get("rejected")
        for f, msgs in (("chosen", chosen), ("rejected", rejected)):
            if not isinstance(msgs, list) or not msgs:
                raise DataError(self.source, row, f, "expected a non-empty list of {role, content} messages", SKIP_HINT)
        n = 0
        while n < min(len(chosen), len(rejected)) - 1 and chosen[n] == rejected[n]:
            n += 1
        if n == 0:
            raise DataError(self.source, row, "chosen", "shares no leading messages with 'rejected', so there is no prompt", SKIP_HINT)
        return {**raw, "prompt": chosen[:n], "chosen": chosen[n:], "rejected": rejected[n:]}

    def _split_hh(self, row: int, raw: dict) -> dict[str, str]:
        """HH transcripts: the prompt is the shared prefix up to and including the last '\\n\\nAssistant:'."""
        chosen, rejected = self._text(row, raw, "chosen"), self._text(row, raw, "rejected")
        cut = chosen.rfind(HH_ASSISTANT)
        if cut < 0:
            raise DataError(self.source, row, "chosen", f"no {HH_ASSISTANT!r} turn found in the transcript", SKIP_HINT)
        end = cut + len(HH_ASSISTANT)
        prompt = chosen[:end]
        if not rejected.startswith(prompt):
            raise DataError(self.source, row, "rejected", "does not share the dialogue prefix of 'chosen'", SKIP_HINT)
        out = {"prompt": prompt, "chosen": chosen[end:], "rejected": rejected[end:]}
        for f in ("chosen", "rejected"):
            if not out[f].strip():
                raise DataError(self.source, row, f, "empty response after the last Assistant turn", SKIP_HINT)
        return out

    def _ranked(self, row: int, raw: dict) -> dict[str, Any]:
        key = "query" if "query" in raw and "prompt" not in raw else "prompt"
        prompt = self._text(row, raw, key)  # errors name the column the file actually has
        responses, scores = raw.get("responses"), raw.get("scores")
        if not isinstance(responses, list) or len(responses) < 2:
            raise DataError(self.source, row, "responses", "expected a list of at least 2 responses", SKIP_HINT)
        if not isinstance(scores, list) or len(scores) != len(responses):
            got = len(scores) if isinstance(scores, list) else type(scores).__name__
            raise DataError(
                self.source, row, "scores", f"not one score per response (expected a list of {len(responses)}, got {got})",
                SKIP_HINT, reason="not one score per response",
            )
        for i, r in enumerate(responses):
            if not isinstance(r, str) or not r.strip():
                raise DataError(self.source, row, f"responses[{i}]", "expected a non-empty string", SKIP_HINT)
        for i, s in enumerate(scores):
            if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s):
                raise DataError(self.source, row, f"scores[{i}]", f"expected a finite number, got {s!r}", SKIP_HINT, reason="expected a finite number")
        if len(set(scores)) < 2:
            raise DataError(self.source, row, "scores", "all responses score the same; nothing to rank", SKIP_HINT)
        return {"prompt": prompt, "responses": list(responses), "scores": [float(s) for s in scores]}
