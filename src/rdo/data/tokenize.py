"""Token ids for canonical records, with one BOS/EOS rule and one truncation rule for every input kind.

Ends of responses: a response ends as an assistant turn ends.
- plain-text rows: the response's tokens, then EOS;
- conversational rows (rendered by the chat template, `rdo_chat` set): the rendered text already
  ends the turn as the template does (ChatML `...<|im_end|>\n`, Llama 3 `...<|eot_id|>`), so nothing
  is appended — unless the template's turn end holds no end-of-turn token (no EOS, no special
  token), in which case EOS is appended so the model can still learn to stop.
The tokens after the content (`<|im_end|>\n`, `<|eot_id|>` or EOS) are the response's *tail*.

Prompts get the tokenizer's BOS when the tokenizer itself adds one (Llama-style; GPT-2- and
ChatML-style tokenizers do not) and the text does not already start with it: `Encoder.with_bos`,
used for policy, reward-model and difference-model inputs and generation prompts alike.

Truncation (in this order):
1. the prompt keeps its last `max_prompt_length` tokens (left truncation: the end of a dialogue
   matters most), except that a leading BOS stays first (when max_prompt_length > 1): models that
   use a BOS were trained with it at position 0;
2. each response keeps its first tokens so that prompt + response fits `max_length`; its tail
   (end of turn, or EOS) always stays at its end;
3. a response never ends with zero content tokens: when the prompt leaves room for less than one
   token plus the tail, the row is invalid ("prompt too long") — an error, or a counted skip.
Every cut is counted (`Encoder.cuts`) and reported with the largest one; transformers' warning
about sequences longer than the model maximum is silenced, since cutting is done here on purpose.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from rdo.data.chat import assistant_turn_end, end_of_turn_ids, render_prompt
from rdo.data.errors import SKIP_HINT, DataError, SkipReport
from rdo.data.formats import CHAT_KEY  # set on records the chat template rendered

log = logging.getLogger("rdo.data")


@dataclass(frozen=True)
class Truncation:
    max_length: int = 1024
    max_prompt_length: int | None = 512

    def __post_init__(self):
        if self.max_length < 3:
            raise ValueError(f"max_length={self.max_length} is too small; it must fit a prompt token, a response token and EOS")
        if self.max_prompt_length is not None and not 1 <= self.max_prompt_length <= self.max_length - 2:
            raise ValueError(
                f"max_prompt_length={self.max_prompt_length} must be between 1 and max_length-2={self.max_length - 2} "
                "so every response keeps at least one token plus EOS"
            )


@dataclass
class Cuts:
    """What truncation removed: how many prompts and responses lost tokens, and the largest cut of each."""

    prompts: int = 0
    responses: int = 0
    largest_prompt: tuple[int, str] = (0, "")  # (tokens removed, "file row N")
    largest_response: tuple[int, str] = (0, "")

    def add(self, where: tuple[str, int], prompt_cut: int, response_cuts: list[int]) -> None:
        at = f"{where[0]} row {where[1]}"
        if prompt_cut > 0:
            self.prompts += 1
            self.largest_prompt = max(self.largest_prompt, (prompt_cut, at), key=lambda t: t[0])
        for cut in response_cuts:
            if cut > 0:
                self.responses += 1
                self.largest_response = max(self.largest_response, (cut, at), key=lambda t: t[0])

    def summary(self) -> str:
        if not (self.prompts or self.responses):
            return "no prompt or response was truncated"
        parts = []
        if self.prompts:
            parts.append(f"{self.prompts} prompt(s) lost their beginning (largest cut: {self.largest_prompt[0]} tokens, {self.largest_prompt[1]})")
        if self.responses:
            parts.append(f"{self.responses} response(s) lost their end (largest cut: {self.largest_response[0]} tokens, {self.largest_response[1]})")
        return "truncated: " + "; ".join(parts) + ". Raise --max_length / --max_prompt_length to keep more"

    def as_dict(self) -> dict:
        return {"prompts": self.prompts, "responses": self.responses,
                "largest_prompt_cut": self.largest_prompt[0], "largest_response_cut": self.largest_response[0]}


def bos_to_add(tokenizer) -> int | None:
    """The BOS id to put first, only when the tokenizer itself adds one (Llama-style); else None."""
    bos = tokenizer.bos_token_id
    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bos if bos is not None and probe and probe[0] == bos else None


class Encoder:
    """Encodes prompts and responses for one tokenizer and truncation rule (see the module docstring)."""

    def __init__(self, tokenizer, truncation: Truncation):
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token; set tokenizer.eos_token so responses can end")
        self.tok, self.trunc = tokenizer, truncation
        self.eos = tokenizer.eos_token_id
        self.bos = bos_to_add(tokenizer)
        # Cutting long texts is done here on purpose; transformers' "indexing errors" warning would mislead.
        if hasattr(tokenizer, "deprecation_warnings"):
            tokenizer.deprecation_warnings["sequence-length-is-longer-than-the-specified-maximum"] = True
        self.turn_end_text = assistant_turn_end(tokenizer)
        stops = set(end_of_turn_ids(tokenizer))
        turn_end = self.tokens([self.turn_end_text])[0] if self.turn_end_text else []
        self.turn_end = turn_end if any(i in stops for i in turn_end) else []  # [] : the turn end holds no stop token
        self.cuts = Cuts()

    def tokens(self, texts: list[str]) -> list[list[int]]:
        """Token ids of many texts in one call of the (fast) tokenizer, no special tokens added."""
        if not texts:
            return []
        return self.tok(list(texts), add_special_tokens=False)["input_ids"]

    def with_bos(self, ids: list[int]) -> list[int]:
        """The one BOS rule: BOS first when the tokenizer uses one and `ids` does not start with it."""
        if self.bos is not None and (not ids or ids[0] != self.bos):
            return [self.bos] + ids
        return ids

    def prompt_ids(self, text: str) -> list[int]:
        return self.with_bos(self.tokens([text])[0])

    def ended(self, ids: list[int], chat: bool) -> list[int]:
        """A response's ids with its end: a rendered turn end is kept as is, anything else gets EOS."""
        if chat and self.turn_end and ids[-len(self.turn_end):] == self.turn_end:
            return ids
        return ids + [self.eos]

    def response_ids(self, text: str, chat: bool = False) -> list[int]:
        return self.ended(self.tokens([text])[0], chat)

    def tail(self, ids: list[int]) -> int:
        """How many final tokens of an ended response truncation must keep: the turn end, or EOS."""
        n = len(self.turn_end)
        return n if n and ids[-n:] == self.turn_end else 1

    def fit(self, prompt: list[int], responses: list[list[int]], where: tuple[str, int]) -> tuple[list[int], list[list[int]]]:
        """Apply the truncation rule to one prompt and its ended responses (see the module docstring)."""
        t = self.trunc
        original = len(prompt)
        if t.max_prompt_length is not None and len(prompt) > t.max_prompt_length:
            # 1. left truncation; a leading BOS is kept (unless it would be the only token left)
            keep_bos = int(self.bos is not None and prompt[0] == self.bos and t.max_prompt_length > 1)
            prompt = prompt[:keep_bos] + prompt[len(prompt) - t.max_prompt_length + keep_bos:]
        room = t.max_length - len(prompt)
        tails = [self.tail(r) for r in responses]
        if room < 1 + max(tails):  # 3. no room for one content token + the tail
            raise DataError(
                where[0], where[1], "prompt",
                f"{len(prompt)} tokens leave no room for a response within max_length={t.max_length}",
                "Raise --max_length, set --max_prompt_length to truncate prompts from the left, or " + SKIP_HINT[0].lower() + SKIP_HINT[1:],
                reason="too long for max_length",
            )
        fitted = [r if len(r) <= room else r[: room - n] + r[-n:] for r, n in zip(responses, tails)]  # 2.
        self.cuts.add(where, original - len(prompt), [len(r) - len(f) for r, f in zip(responses, fitted)])
        return prompt, fitted

    def encode(self, record: dict, kind: str, source: str) -> dict:
        """Token ids for one canonical record; `length` is the longest prompt+response in tokens."""
        where = (source, record["rdo_row"])
        prompt = self.prompt_ids(record["prompt"])
        chat = bool(record.get(CHAT_KEY))
        if kind == "pair":
            prompt, (chosen, rejected) = self.fit(
                prompt, [self.response_ids(record["chosen"], chat), self.response_ids(record["rejected"], chat)], where
            )
            out = {"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected}
            longest = max(len(chosen), len(rejected))
        elif kind == "ranked":
            prompt, responses = self.fit(prompt, [self.response_ids(r, chat) for r in record["responses"]], where)
            out = {"prompt_ids": prompt, "responses_ids": responses, "scores": record["scores"]}
            longest = max(len(r) for r in responses)
        elif kind == "unpaired":
            prompt, (completion,) = self.fit(prompt, [self.response_ids(record["completion"], chat)], where)
            out = {"prompt_ids": prompt, "completion_ids": completion, "label": record["label"]}
            longest = len(completion)
        else:
            raise ValueError(f"unknown record kind {kind!r}")
        out["rdo_row"] = record["rdo_row"]
        if "rdo_example" in record:  # a pair split into two pointwise examples (KTO)
            out["rdo_example"] = record["rdo_example"]
        out["length"] = len(prompt) + longest
        return out


def encode_records(
    records: list[dict], encoder: Encoder, kind: str, source: str, *, skip_invalid: bool, skips: SkipReport
) -> list[dict]:
    """Encode every record; too-long prompts raise or are counted in `skips`; truncation is logged."""
    out = []
    for record in records:
        try:
            out.append(encoder.encode(record, kind, source))
        except DataError as err:
            if not skip_invalid:
                raise
            skips.add(err)
    if encoder.cuts.prompts or encoder.cuts.responses:
        log.warning("%s: %s", source, encoder.cuts.summary())
    return out


def generation_prompt_ids(tokenizer, prompt) -> list[int]:
    """Token ids of the rendered prompt, BOS added exactly as for training (`Encoder.prompt_ids`)."""
    return Encoder(tokenizer, Truncation(max_prompt_length=None)).prompt_ids(render_prompt(tokenizer, prompt))
