"""Reward and difference models: one-output heads on any causal LM, their inputs, and rdo.json.

Both scorers are `AutoModelForSequenceClassification(num_labels=1)` on a causal-LM checkpoint: the
head reads the hidden state of the last token that is not the pad token. So the pad token must never
be a sequence's last token: `use_scorer_pad` gives scorers a pad distinct from EOS and the end of
turn (SmolLM2 pads with its EOS `<|im_end|>`; its scorers pad with `<|endoftext|>` instead, no new
embedding), and the head reads the sequence's last real token:

- reward model      r(x, y)       input: exactly the ids `rdo align` trains on (rdo.data.tokenize):
                                  prompt + response + EOS for plain text, so the head reads the EOS;
                                  a conversational response ends as the template ends the turn
                                  (ChatML `<|im_end|>\n`: the head reads that `\n`).
- difference model  R(x, y1, y2)  input: the template, default the paper's (Sec. 3.1)
                                  "Query: {x}; Response 1: {y1}; Response 2: {y2}", then EOS, which
                                  the head reads. R > 0 means y1 is better than y2, |R| how much.
                                  {x} is the prompt as rendered (for conversational rows: the chat
                                  template's dialogue, roles included); {y1}, {y2} are the responses'
                                  content: a conversational response's end-of-turn markup (e.g.
                                  `<|im_end|>\n`) is removed, as the comparison is no assistant turn.

A scorer folder is an ordinary Hugging Face folder plus `rdo.json` recording the kind, the template,
the max lengths and the pooling, so `rdo score` and `rdo eval accuracy` need no repeated flags.

Pooling (`--pooling`, recorded in rdo.json): `last` is the above (the paper's). `mean` reads the
final hidden states of the response's tokens instead: the head, which is linear, is applied to every
token and its outputs averaged with weights (`pool_weights`), which equals the head on the mean state.
- reward model: the mean over the response's tokens as `rdo align` trains on them (its end, EOS or
  end of turn, included); the prompt's tokens are left out, so the score is about the answer.
- difference model: the mean over y1's tokens minus the mean over y2's tokens. A plain mean over
  both responses (or the whole sequence) is nearly the same for (y1, y2) and (y2, y1), so the head
  could not tell which response is better except through context; the signed mean is antisymmetric
  by construction, while y2's states still see y1 (one sequence, as the paper's model).
Positions are counted among each row's real tokens, so left and right padding give the same score.

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
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from rdo.config import SCORER_POOLINGS
from rdo.data.chat import assistant_turn_end, end_of_turn_ids, special_ids
from rdo.core import prefix
from rdo.core.logps import _unwrap
from rdo.data.collate import grouped_batch, pad_sequences
from rdo.data.tokenize import Encoder, Truncation

log = logging.getLogger(__name__)

SPEC_FILE = "rdo.json"
KINDS = ("reward", "difference")
POOLINGS = SCORER_POOLINGS  # the head reads the last real token (the paper), or the mean over the response(s) (module doc)
Span = tuple[int, int, float]  # [start, end) among a sequence's real tokens, and the sign its mean enters with
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
    pooling: str = "last"  # folders written before --pooling existed read the last token

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"scorer kind {self.kind!r}: expected one of {KINDS}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"{SPEC_FILE}: pooling {self.pooling!r}: expected one of {POOLINGS}")
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
        return replace(self, max_length=max_length or self.max_length,
                       max_prompt_length=max_prompt_length if max_prompt_length is not None else self.max_prompt_length)


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
    """Token ids of (x, y1, y2) in the difference model's template, with fair truncation (module doc).

    Built on `Encoder`, the one home of tokenisation, the BOS rule and the chat template's turn end.
    """

    def __init__(self, tokenizer, template: str, truncation: Truncation):
        self.base = Encoder(tokenizer, truncation)
        self.tok, self.trunc, self.eos = tokenizer, truncation, self.base.eos
        self.pieces = [(self.base.tokens([lit])[0] if lit else [], name) for lit, name in parse_template(template)]
        first_literal = self.pieces[0][0]  # [] when the template starts with a field
        self.bos = [self.base.bos] if len(self.base.with_bos(first_literal)) > len(first_literal) else []
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
        return self.base.tokens([text])[0]

    def content(self, text: str, chat: bool) -> str:
        """A response as it goes into the template: a conversational one without its end-of-turn markup."""
        end = self.base.turn_end_text
        return text[: -len(end)] if chat and end and text.endswith(end) else text

    def query_and_responses(self, prompts: list[str], responses: list[list[str]], chats: list[bool]):
        """Token ids of each row's query and responses (one tokenizer call each): (xs, [[y ids]])."""
        xs = self.base.tokens(prompts)
        flat = self.base.tokens([self.content(y, c) for ys, c in zip(responses, chats) for y in ys])
        out, pos = [], 0
        for ys in responses:
            out.append(flat[pos : pos + len(ys)])
            pos += len(ys)
        return xs, out

    def assemble(self, x: list[int], y1: list[int], y2: list[int], where: tuple[str, int] | None = None) -> list[int]:
        """One input sequence from already tokenised pieces (see the truncation rule above).

        With `where` (file, row), what truncation cut is counted in `self.base.cuts`.
        """
        return self.assemble_pooled(x, y1, y2, where)[0]

    def assemble_pooled(self, x: list[int], y1: list[int], y2: list[int],
                        where: tuple[str, int] | None = None) -> tuple[list[int], list[Span]]:
        """`assemble` plus the spans `--pooling mean` reads: y1's kept tokens (+1) and y2's (-1)."""
        kept_x = x[-self.prompt_cap:] if len(x) > self.prompt_cap else x  # 1. left truncation
        room = self.trunc.max_length - self.overhead - len(kept_x)
        n1, n2 = fair_split(len(y1), len(y2), room)  # 2.
        if where is not None:
            self.base.cuts.add(where, len(x) - len(kept_x), [len(y1) - n1, len(y2) - n2])
        parts = {"x": kept_x, "y1": y1[:n1], "y2": y2[:n2]}
        out, at = list(self.bos), {}
        for lit_ids, name in self.pieces:
            out += lit_ids
            if name is not None:
                at[name] = len(out)
                out += parts[name]
        spans = [(at["y1"], at["y1"] + n1, 1.0), (at["y2"], at["y2"] + n2, -1.0)]
        return out + [self.eos], spans


def response_span(prompt_len: int, response_len: int) -> list[Span]:
    """A reward model's sequence prompt + response: `--pooling mean` reads the response's tokens."""
    return [(prompt_len, prompt_len + response_len, 1.0)]


def pool_weights(spans: list[list[Span]], mask: torch.Tensor) -> torch.Tensor:
    """(N, T) weights for `--pooling mean`: sign / span length on each span's tokens, 0 elsewhere.

    Span positions count a row's real tokens (mask 1), so the weights follow the tokens whatever the padding side.
    """
    weights = torch.zeros(mask.shape, dtype=torch.float32)
    for i, row in enumerate(spans):
        real = mask[i].nonzero().squeeze(-1)  # (L_i,) positions of the row's real tokens
        for start, end, sign in row:
            if end <= start or end > len(real):
                raise ValueError(f"pooling span [{start}, {end}) does not fit a row of {len(real)} tokens")
            weights[i, real[start:end]] = sign / (end - start)
    return weights


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


def use_scorer_pad(tokenizer) -> bool:
    """Give `tokenizer` a pad token that can never be a sequence's last token, so the head reads the last real one.

    Keeps a pad distinct from EOS and the end of turn; else takes the unknown token or another special
    token already in the vocabulary (no new embedding); only when there is none adds `<|rdo_pad|>`.
    Returns whether a token was added (the model's embeddings must then grow: `build_scorer_model`).
    """
    turn_end = Encoder(tokenizer, Truncation(max_prompt_length=None)).turn_end
    finals = {tokenizer.eos_token_id, *end_of_turn_ids(tokenizer), *turn_end[-1:]}
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id not in finals:
        return False
    used_by_template = set(tokenizer(assistant_turn_end(tokenizer), add_special_tokens=False)["input_ids"])
    for cand in [tokenizer.unk_token_id, *sorted(special_ids(tokenizer) - used_by_template - {tokenizer.bos_token_id})]:
        if cand is not None and cand not in finals:
            tokenizer.pad_token = tokenizer.convert_ids_to_tokens(cand)
            return False
    tokenizer.add_special_tokens({"pad_token": "<|rdo_pad|>"})
    return True


# --- models ------------------------------------------------------------------------------------

def build_scorer_model(name_or_path: str, tokenizer, torch_dtype: str = "auto", trust_remote_code: bool = False,
                       revision: str | None = None, attn_implementation: str | None = None):
    """A causal-LM checkpoint with a fresh 1-output score head reading the last non-pad token."""
    from transformers import AutoModelForSequenceClassification

    from rdo.models import load_pretrained

    try:
        model = load_pretrained(AutoModelForSequenceClassification, name_or_path, torch_dtype, trust_remote_code,
                                revision, attn_implementation, num_labels=1)
    except ValueError as e:  # an architecture without a sequence-classification class
        raise ValueError(f"{name_or_path}: transformers has no sequence-classification head for this model ({e})") from e
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:  # use_scorer_pad added a pad token
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id  # the head finds the last token by it
    return model


def backbone_of(model):
    """(the model under any LoRA wrapper, its transformer backbone): `model.model` for Llama, `.transformer` for GPT-2."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base, getattr(base, base.base_model_prefix)


def head_modules(model) -> list:
    """The score head's modules (every child of the model outside its backbone), with or without LoRA.

    Module objects, not names: they keep their identity when an engine wraps or renames the model.
    """
    base, backbone = backbone_of(model)
    return [m for m in base.children() if m is not backbone]


def scores_of(model, batch: dict) -> torch.Tensor:
    """One forward -> the head's output at each row's last non-pad token, or pooled by the batch's
    `pool_weights` (--pooling mean, padded rows), (N,) float32.

    A prefix-shared batch (it has `segment_ids`) gives each response's score in the padded rows' order,
    once the shared layout matched padded rows on this model (else from padded rows rebuilt from it).
    """
    if "segment_ids" in batch:
        pad_id = _unwrap(model).config.pad_token_id
        if prefix.verified(_SHARED_CHECKED, _unwrap(model).get_input_embeddings().weight, model, batch,
                           lambda one: shared_scores(model, one), lambda one: scores_of(model, prefix.unshare(one, pad_id)),
                           lambda a, b: bool(torch.allclose(a, b, rtol=1e-4, atol=1e-4))):
            return shared_scores(model, batch)
        batch = prefix.unshare(batch, pad_id)
    return head_scores(model, batch["input_ids"], batch["attention_mask"], batch.get("pool_weights"))


_SHARED_CHECKED: dict[int, bool] = {}  # id(input embedding) -> shared scores matched padded rows on this scorer


def shared_scores(model, batch: dict) -> torch.Tensor:
    """(U,) the score head's output at each response's last token of a prefix-shared batch, in unit order.

    The head runs at every position (one output each: cheap) and is read where each response ends;
    the model's own pooling (the row's last non-pad token) is not used.
    """
    box = []
    handle = head_modules(_unwrap(model))[0].register_forward_hook(lambda module, args, out: box.append(out))
    try:
        model(input_ids=batch["input_ids"], attention_mask=prefix.model_attention_mask(model, batch),
              position_ids=batch["position_ids"], use_cache=False)
    finally:
        handle.remove()
    seg, units = batch["segment_ids"], batch["response_units"]
    ends = torch.zeros_like(seg, dtype=torch.bool)  # (B, T) the last token of each response segment
    ends[:, :-1] = (seg[:, :-1] > 0) & (seg[:, :-1] != seg[:, 1:])
    ends[:, -1] = seg[:, -1] > 0
    rows, cols = ends.nonzero(as_tuple=True)
    out = box[-1][rows, cols, 0].float()  # (U,) in row-major order
    order = units[rows, seg[rows, cols] - 1]
    return out.new_zeros(out.shape).index_copy(0, order, out)


def decoder_layers(model) -> torch.nn.ModuleList:
    """The backbone's stack of transformer blocks (Llama `layers`, GPT-2 `h`, ...): the ModuleList whose
    length is `config.num_hidden_layers`.

    Not simply the longest ModuleList: a mixture-of-experts block with more experts than the model has
    layers would be taken for the layers, and the wrong parameters frozen. Lists nested in another match
    (4 layers of 4 experts) are inside the stack, so the outermost match is it; anything else is refused.
    """
    base, backbone = backbone_of(model)
    n = getattr(base.config, "num_hidden_layers", None)
    named = {name: m for name, m in backbone.named_modules() if isinstance(m, torch.nn.ModuleList) and len(m) > 0}
    matches = [name for name, m in named.items() if len(m) == n]
    outer = [name for name in matches if not any(name.startswith(other + ".") for other in matches if other != name)]
    if len(outer) != 1:
        lists = ", ".join(f"{name} ({len(m)})" for name, m in list(named.items())[:6]) or "none"
        raise ValueError(f"{type(backbone).__name__}: --train_top_layers / --backbone_layers / --cache_frozen need exactly one ModuleList of "
                         f"config.num_hidden_layers = {n} blocks; its ModuleLists (length): {lists}")
    return named[outer[0]]


def keep_bottom_layers(model, n_layers: int) -> int:
    """Drop every transformer block above the first `n_layers` (the final norm and the head stay on top).

    The model becomes an ordinary `n_layers`-layer model of its architecture (its config says so), so
    saving and loading it need nothing of rdo. Returns the number of blocks it had.
    """
    layers = decoder_layers(model)
    total = len(layers)
    if not 0 < n_layers <= total:
        raise ValueError(f"--backbone_layers {n_layers}: the model has {total} layers (choose 1..{total})")
    del layers[n_layers:]
    config = backbone_of(model)[0].config
    config.num_hidden_layers = n_layers
    if isinstance(getattr(config, "layer_types", None), list):  # per-layer attention kinds (sliding / full)
        config.layer_types = config.layer_types[:n_layers]
    return total


def train_only_top(model, n_layers: int) -> tuple[int, int]:
    """Freeze the backbone except its top `n_layers` blocks and what follows them (the final norm).

    The embeddings and the lower blocks get no gradient, so the backward pass stops at the first trained
    block: a step costs about one forward plus the top blocks' backward. The head stays trainable.
    Returns (trained blocks, total blocks).
    """
    layers = decoder_layers(model)
    if not 0 < n_layers <= len(layers):
        raise ValueError(f"--train_top_layers {n_layers}: the model has {len(layers)} layers")
    base, backbone = backbone_of(model)
    frozen = {id(p) for m in layers[: len(layers) - n_layers] for p in m.parameters()}
    frozen |= {id(p) for m in backbone.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    for p in backbone.parameters():
        p.requires_grad_(id(p) not in frozen)
    return n_layers, len(layers)


def head_parameter_names(model) -> set[str]:
    """Names of the score head's parameters in `model` as it is now (what --freeze_backbone leaves trainable)."""
    head = {id(p) for m in head_modules(model) for p in m.parameters()}
    return {n for n, p in model.named_parameters() if id(p) in head}


def head_scores(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                weights: torch.Tensor | None = None) -> torch.Tensor:
    """One forward -> (N,) float32 scores: the head at each row's last real token (`weights` None, the model's
    own pooling), or the head's per-token outputs summed with `weights` (N, T) (`pool_weights`, --pooling mean).

    The per-token outputs are taken from the head module by a hook, so LoRA, --cache_frozen and the
    model's own forward stay as they are. The head is linear: the weighted sum of its outputs is the
    head applied to the weighted mean of the final hidden states (a bias, if any, enters once for a
    reward model and cancels in a difference model's signed mean).
    """
    if weights is None:
        return model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, 0].float()
    inner = model
    while hasattr(inner, "module"):  # DistributedDataParallel and the like
        inner = inner.module
    heads = head_modules(inner)
    if len(heads) != 1:
        raise ValueError(f"--pooling mean needs a model whose score head is one module; {type(inner).__name__} has {len(heads)}")
    box: list[torch.Tensor] = []
    handle = heads[0].register_forward_hook(lambda module, args, output: box.append(output))
    try:
        model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    finally:
        handle.remove()
    per_token = box[-1][..., 0].float()  # (N, T)
    return (per_token * weights.to(per_token.device)).sum(-1)  # (N,)


CPU_BATCH_TOKENS = 1024  # measured (benchmarks/bench_scoring.py): on a CPU, big batches of long sequences run slower than small ones


class Scorer:
    """A loaded scorer: model, tokenizer, spec, and batched scoring of token-id sequences."""

    def __init__(self, model, tokenizer, spec: ScorerSpec, device: torch.device):
        self.model, self.tok, self.spec, self.device = model, tokenizer, spec, device
        self.kind = spec.kind
        # pad with the id the head skips (older folders may differ from the tokenizer's pad)
        self.pad_id = model.config.pad_token_id if model.config.pad_token_id is not None else tokenizer.pad_token_id
        trunc = Truncation(spec.max_length, spec.max_prompt_length)
        self.encoder = Encoder(tokenizer, trunc)
        self.diff_encoder = DifferenceEncoder(tokenizer, spec.template, trunc) if self.kind == "difference" else None

    def batch_tokens(self, max_batch_tokens: int | None) -> int:
        """The padded-token cap per forward: as given, or by device (GPUs want big batches, CPUs do not)."""
        if max_batch_tokens is not None:
            return max_batch_tokens
        return 0 if self.device.type == "cuda" else CPU_BATCH_TOKENS

    @torch.inference_mode()
    def forward(self, seqs: list[list[int]], spans: list[list[Span]] | None = None) -> torch.Tensor:
        """Scores of right-padded sequences in one forward: (N,) float32 on the CPU (`spans`: what
        `--pooling mean` reads of each sequence, needed when the scorer pools so)."""
        ids, mask = pad_sequences(seqs, self.pad_id)
        weights = None
        if self.spec.pooling == "mean":
            if spans is None:
                raise ValueError("this scorer pools the mean over responses (rdo.json: pooling mean): pass each sequence's spans")
            weights = pool_weights(spans, mask)
        return head_scores(self.model, ids.to(self.device), mask.to(self.device), weights).cpu()  # (N,)

    @torch.inference_mode()
    def forward_shared(self, prefixes: list[list[int]], suffixes: list[list[list[int]]]) -> torch.Tensor:
        """Scores of the sequences prefixes[b] + suffixes[b][j], one [prefix | suffix_1 | ...] row per b:
        (sum of suffix counts,) float32 on the CPU, group by group (rdo.core.prefix; a reward model only)."""
        starts = [0]
        for s in suffixes:
            starts.append(starts[-1] + len(s))
        batch = grouped_batch(prefixes, suffixes, [list(range(a, b)) for a, b in zip(starts, starts[1:])], self.pad_id,
                              prefix_sharing=True)
        return scores_of(self.model, {k: v.to(self.device) for k, v in batch.items()}).float().cpu()


def load_scorer(path: str, device: str = "auto", torch_dtype: str = "auto",
                max_length: int | None = None, max_prompt_length: int | None = None, trust_remote_code: bool = False,
                attn_implementation: str | None = None) -> Scorer:
    """Load a scorer folder (model, tokenizer, rdo.json) for inference (safetensors only; no remote code unless asked)."""
    from transformers import AutoModelForSequenceClassification

    from rdo.models import load_pretrained, load_tokenizer

    spec = ScorerSpec.load(path).with_lengths(max_length, max_prompt_length)
    tok = load_tokenizer(path, trust_remote_code)
    model = load_pretrained(AutoModelForSequenceClassification, path, torch_dtype, trust_remote_code,
                            attn_implementation=attn_implementation)  # a local folder: no revision
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    from rdo.utils.distributed import device as resolve_device

    dev = resolve_device(device)
    model.to(dev).eval()
    return Scorer(model, tok, spec, dev)
