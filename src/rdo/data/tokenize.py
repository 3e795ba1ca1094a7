"""Token ids for canonical records, with one truncation rule for every method.

Rule (in this order):
1. the prompt keeps its last `max_prompt_length` tokens (left truncation: the end of a dialogue
   matters most), except that a leading BOS stays first (when max_prompt_length > 1): models that
   use a BOS were trained with it at position 0;
2. each response keeps its first tokens so that prompt + response fits `max_length`; the EOS token
   always stays as the last token;
3. a response never ends with zero content tokens: when the prompt leaves room for less than one
   token plus EOS, the row is invalid ("prompt too long") — an error, or a counted skip.

Prompts get the tokenizer's BOS (when it uses one and the text does not already start with it);
responses are encoded without special tokens and end with EOS.
"""

from __future__ import annotations

from dataclasses import dataclass

from rdo.data.errors import SKIP_HINT, DataError, SkipReport


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


class Encoder:
    """Encodes prompts and responses for one tokenizer and truncation rule."""

    def __init__(self, tokenizer, truncation: Truncation):
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token; set tokenizer.eos_token so responses can end")
        self.tok, self.trunc = tokenizer, truncation
        self.eos = tokenizer.eos_token_id
        bos = tokenizer.bos_token_id
        # Only add BOS when the tokenizer itself would (Llama-style); GPT-2-style tokenizers don't.
        probe = tokenizer("a", add_special_tokens=True)["input_ids"]
        self.bos = bos if bos is not None and probe and probe[0] == bos else None

    def prompt_ids(self, text: str) -> list[int]:
        ids = self.tok(text, add_special_tokens=False)["input_ids"]
        if self.bos is not None and (not ids or ids[0] != self.bos):
            ids = [self.bos] + ids
        return ids

    def response_ids(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"] + [self.eos]

    def fit(self, prompt: list[int], responses: list[list[int]], where: tuple[str, int]) -> tuple[list[int], list[list[int]]]:
        """Apply the truncation rule to one prompt and its responses (see the module docstring)."""
        t = self.trunc
        if t.max_prompt_length is not None and len(prompt) > t.max_prompt_length:
            # 1. left truncation; a leading BOS is kept (unless it would be the only token left)
            keep_bos = int(self.bos is not None and prompt[0] == self.bos and t.max_prompt_length > 1)
            prompt = prompt[:keep_bos] + prompt[len(prompt) - t.max_prompt_length + keep_bos:]
        room = t.max_length - len(prompt)
        if room < 2:  # 3. no room for one content token + EOS
            raise DataError(
                where[0], where[1], "prompt",
                f"{len(prompt)} tokens leave no room for a response within max_length={t.max_length}",
                "Raise --max_length, set --max_prompt_length to truncate prompts from the left, or " + SKIP_HINT[0].lower() + SKIP_HINT[1:],
                reason="too long for max_length",
            )
        fitted = [r if len(r) <= room else r[: room - 1] + [self.eos] for r in responses]  # 2.
        return prompt, fitted

    def encode(self, record: dict, kind: str, source: str) -> dict:
        """Token ids for one canonical record; `length` is the longest prompt+response in tokens."""
        where = (source, record["rdo_row"])
        prompt = self.prompt_ids(record["prompt"])
        if kind == "pair":
            prompt, (chosen, rejected) = self.fit(
                prompt, [self.response_ids(record["chosen"]), self.response_ids(record["rejected"])], where
            )
            out = {"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected}
            longest = max(len(chosen), len(rejected))
        elif kind == "ranked":
            prompt, responses = self.fit(prompt, [self.response_ids(r) for r in record["responses"]], where)
            out = {"prompt_ids": prompt, "responses_ids": responses, "scores": record["scores"]}
            longest = max(len(r) for r in responses)
        elif kind == "unpaired":
            prompt, (completion,) = self.fit(prompt, [self.response_ids(record["completion"])], where)
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
    """Encode every record; too-long prompts raise or are counted in `skips`."""
    out = []
    for record in records:
        try:
            out.append(encoder.encode(record, kind, source))
        except DataError as err:
            if not skip_invalid:
                raise
            skips.add(err)
    return out
