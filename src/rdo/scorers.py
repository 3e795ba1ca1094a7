"""Reward and difference models: one-output heads on any causal LM, their inputs, and rdo.json.

Both scorers are `AutoModelForSequenceClassification(num_labels=1)` on a causal-LM checkpoint: the
head reads the hidden state of the last non-pad token (so `config.pad_token_id` must be set).

- reward model      r(x, y)       input: prompt + response + EOS (the same ids `rdo align` trains on)
- difference model  R(x, y1, y2)  input: the template, default the paper's (Sec. 3.1)
                                  "Query: {x}; Response 1: {y1}; Response 2: {y2}", then EOS.
                                  R > 0 means y1 is better than y2, |R| how much.

A scorer folder is an ordinary Hugging Face folder plus `rdo.json` recording the kind, the template
and the max lengths, so `rdo score` and `rdo eval accuracy` need no repeated flags.

Difference-model truncation (its input is twice a reward model's): template pieces are tokenised
separately, so the query and each response can be cut on their own:
1. the query keeps its last `max_prompt_length` tokens (left truncation, as for reward models);
2. the two responses share the remaining room fairly: when both do not fit, a response shorter than
   half the room keeps all of itself and the other gets the rest, otherwise each gets half. Each
   keeps its beginning. The rule is symmetric, so (y1, y2) and (y2, y1) keep the same tokens.
3. every response keeps at least one token: configurations that cannot guarantee it are rejected.
"""

from __future__ import annotations

import json
import logging
import string
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from rdo.data.collate import pad_sequences
from rdo.data.tokenize import Encoder, Truncation

log = logging.getLogger(__name__)

SPEC_FILE = "rdo.json"
KINDS = ("reward", "difference")
PAPER_TEMPLATE = "Query: {x}; Response 1: {y1}; Response 2: {y2}"
FIELDS = ("x", "y1", "y2")


# --- rdo.json ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ScorerSpec:
    """What a scorer folder's rdo.json records, so later commands need no repeated flags."""

    kind: str
    max_length: int
    max_prompt_length: int | None
    template: str | None = None  # difference models: the resolved format string
    base_model: str | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"scorer kind {self.kind!r}: expected one of {KINDS}")
        if self.kind == "difference" and not self.template:
            raise ValueError("a difference model needs its input template")

    def save(self, folder: str | Path) -> None:
        from rdo import __version__

        (Path(folder) / SPEC_FILE).write_text(json.dumps({**asdict(self), "rdo_version": __version__}, indent=2))

    @classmethod
    def load(cls, folder: str | Path) -> ScorerSpec:
        path = Path(folder) / SPEC_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{folder}: no {SPEC_FILE}; this is not a scorer written by `rdo train-rm` / `rdo train-diff`. "
                "Train one, or add an rdo.json with kind, max_length and max_prompt_length (and template for a difference model)."
            )
        data = json.loads(path.read_text())
        data.pop("rdo_version", None)
        return cls(**data)

    def with_lengths(self, max_length: int | None, max_prompt_length: int | None) -> ScorerSpec:
        """The spec with command-line overrides of the recorded max lengths (None keeps the recorded one)."""
        return ScorerSpec(
            self.kind, max_length or self.max_length,
            max_prompt_length if max_prompt_length is not None else self.max_prompt_length,
            self.template, self.base_model,
        )


# --- templates ---------------------------------------------------------------------------------

def resolve_template(template: str, tokenizer) -> str:
    """`paper`, `chat` or a custom format string -> a format string with {x}, {y1}, {y2} once each.

    `chat` renders the paper's comparison as one user turn of the tokenizer's chat template (with the
    generation prompt), for chat-tuned checkpoints and conversational data. It is rendered once with
    sentinels, so the turn markup becomes literal template text and truncation still works per field.
    """
    if template == "paper":
        return PAPER_TEMPLATE
    if template == "chat":
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("--template chat needs a tokenizer with a chat template; this one has none (use --template paper)")
        sentinel = {f: f"\x00{f.upper()}\x00" for f in FIELDS}
        content = PAPER_TEMPLATE.format(**sentinel)
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True)
        rendered = rendered.replace("{", "{{").replace("}", "}}")
        for f, s in sentinel.items():
            rendered = rendered.replace(s, "{" + f + "}")
        template = rendered
    parse_template(template)  # validates
    return template


def parse_template(template: str) -> list[tuple[str, str | None]]:
    """Split a format string into (literal text, field or None) pieces; {x}, {y1}, {y2} exactly once."""
    try:
        pieces = [(lit, name) for lit, name, spec, conv in string.Formatter().parse(template)]
    except ValueError as e:
        raise ValueError(f"template {template!r}: {e} (write literal braces as {{{{ and }}}})") from None
    names = [n for _, n in pieces if n is not None]
    if sorted(names) != sorted(FIELDS):
        raise ValueError(f"template {template!r} must contain {{x}}, {{y1}} and {{y2}} exactly once each (found {names})")
    return pieces


class DifferenceEncoder:
    """Token ids of (x, y1, y2) in the difference model's template, with fair truncation (module doc)."""

    def __init__(self, tokenizer, template: str, truncation: Truncation):
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token; set tokenizer.eos_token")
        self.tok, self.trunc = tokenizer, truncation
        self.eos = tokenizer.eos_token_id
        self.pieces = [(self.ids(lit) if lit else [], name) for lit, name in parse_template(template)]
        bos = Encoder(tokenizer, truncation).bos  # only when the tokenizer itself adds one
        first_literal = self.pieces[0][0]  # [] when the template starts with a field
        self.bos = [bos] if bos is not None and not (first_literal and first_literal[0] == bos) else []
        self.overhead = len(self.bos) + sum(len(ids) for ids, _ in self.pieces) + 1  # + EOS
        room = truncation.max_length - self.overhead
        if room < 2 + (truncation.max_prompt_length or 0):
            raise ValueError(
                f"max_length={truncation.max_length} leaves no room for two responses: the template takes "
                f"{self.overhead - 1} tokens and the query up to {truncation.max_prompt_length}. "
                "Raise --max_length or lower --max_prompt_length."
            )
        self.prompt_cap = truncation.max_prompt_length if truncation.max_prompt_length is not None else room - 2

    def ids(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def assemble(self, x: list[int], y1: list[int], y2: list[int]) -> list[int]:
        """One input sequence from already tokenised pieces (see the truncation rule above)."""
        x = x[-self.prompt_cap:] if len(x) > self.prompt_cap else x  # 1. left truncation
        room = self.trunc.max_length - self.overhead - len(x)
        n1, n2 = fair_split(len(y1), len(y2), room)  # 2.
        parts = {"x": x, "y1": y1[:n1], "y2": y2[:n2]}
        out = list(self.bos)
        for lit_ids, name in self.pieces:
            out += lit_ids
            if name is not None:
                out += parts[name]
        return out + [self.eos]


def fair_split(a: int, b: int, room: int) -> tuple[int, int]:
    """Token budgets for two responses of lengths a and b sharing `room`; symmetric in (a, b)."""
    if a + b <= room:
        return a, b
    half = room // 2
    if a <= half:
        return a, room - a
    if b <= half:
        return room - b, b
    return half, half  # an odd token is left unused so the rule stays symmetric


def tokenize_many(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of many texts in one call of the (fast) tokenizer, no special tokens."""
    if not texts:
        return []
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


# --- models ------------------------------------------------------------------------------------

def build_scorer_model(name_or_path: str, tokenizer, torch_dtype: str = "auto"):
    """A causal-LM checkpoint with a fresh 1-output score head reading the last non-pad token."""
    from transformers import AutoModelForSequenceClassification

    from rdo.models import DTYPES

    try:
        model = AutoModelForSequenceClassification.from_pretrained(name_or_path, num_labels=1, dtype=DTYPES[torch_dtype])
    except ValueError as e:  # an architecture without a sequence-classification class
        raise ValueError(f"{name_or_path}: transformers has no sequence-classification head for this model ({e})") from e
    model.config.pad_token_id = tokenizer.pad_token_id  # the head finds the last token by it
    return model


def head_modules(model) -> list:
    """The score head's modules (every child of the model outside its backbone), with or without LoRA.

    Module objects, not names: they keep their identity when an engine wraps or renames the model.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = getattr(base, base.base_model_prefix)
    return [m for m in base.children() if m is not backbone]


def head_parameter_names(model) -> set[str]:
    """Names of the score head's parameters in `model` as it is now (for reports and tests, not for selection)."""
    head = {id(p) for m in head_modules(model) for p in m.parameters()}
    return {n for n, p in model.named_parameters() if id(p) in head}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


CPU_BATCH_TOKENS = 1024  # measured (benchmarks/bench_scoring.py): on a CPU, big batches of long sequences run slower than small ones


class Scorer:
    """A loaded scorer: model, tokenizer, spec, and batched scoring of token-id sequences."""

    def __init__(self, model, tokenizer, spec: ScorerSpec, device: torch.device):
        self.model, self.tok, self.spec, self.device = model, tokenizer, spec, device
        self.kind = spec.kind
        trunc = Truncation(spec.max_length, spec.max_prompt_length)
        self.encoder = Encoder(tokenizer, trunc)
        self.diff_encoder = DifferenceEncoder(tokenizer, spec.template, trunc) if self.kind == "difference" else None

    def batch_tokens(self, max_batch_tokens: int | None) -> int:
        """The padded-token cap per forward: as given, or by device (GPUs want big batches, CPUs do not)."""
        if max_batch_tokens is not None:
            return max_batch_tokens
        return 0 if self.device.type == "cuda" else CPU_BATCH_TOKENS

    @torch.inference_mode()
    def forward(self, seqs: list[list[int]]) -> torch.Tensor:
        """Scores of right-padded sequences in one forward: (N,) float32 on the CPU."""
        ids, mask = pad_sequences(seqs, self.tok.pad_token_id)
        logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), use_cache=False).logits
        return logits[:, 0].float().cpu()  # (N,)


def load_scorer(path: str, device: str = "auto", torch_dtype: str = "auto",
                max_length: int | None = None, max_prompt_length: int | None = None) -> Scorer:
    """Load a scorer folder (model, tokenizer, rdo.json) for inference."""
    from transformers import AutoModelForSequenceClassification

    from rdo.models import DTYPES, load_tokenizer

    spec = ScorerSpec.load(path).with_lengths(max_length, max_prompt_length)
    tok = load_tokenizer(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, dtype=DTYPES[torch_dtype])
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    dev = resolve_device(device)
    model.to(dev).eval()
    return Scorer(model, tok, spec, dev)
