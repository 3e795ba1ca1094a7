"""`rdo generate`: responses of a causal LM to the prompts of a data file (greedy, beam search, sampling).

- Prompts: the prompt column of any file `rdo.data.load_records` reads, or a file with just `prompt`.
  A message-list prompt is rendered with the chat template and its generation prompt; a prompt
  that occurs twice is generated once (the first row's id and rdo_row are kept).
- Batches: prompts sorted by token length, left-padded, so little is padding; the output is in
  input order whatever the batching.
- Stop: at EOS and at the chat template's end-of-turn token (`<|im_end|>`, `<|eot_id|>`, ...);
  `response` is the decoded text before the stop token, without special tokens: what a user reads.
- Sampling is done by Gumbel-max over the warped logits with one random stream per (input row,
  sample): for a given --seed and device type, the sample drawn for a row does not depend on the
  batch size, the other prompts in its batch, the number of processes or a resume. (What can still
  differ: the logits themselves by float rounding when padding differs, which can flip a near-tie;
  CPU and CUDA random streams differ.)
- Resume: shards of `shard_size` prompts are written atomically to `<output>.shards/`, under a
  manifest keyed by the content of the model, the prompts and every setting that changes the text.
- Under torchrun every process generates its share of the shards on its own device; the main
  process writes the output, identical to a single process's.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from rdo.utils import distributed
from rdo.data import chat
from rdo.config import GenerateConfig
from rdo.utils.fingerprint import digest, model_fingerprint, tokenizer_fingerprint
from rdo.utils.shards import Shards

log = logging.getLogger("rdo.evaluate.generate")
STRATEGIES = ("greedy", "beam", "sample")


# --- prompts and stopping (one home each; see the data layer) ----------------------------------

def render_prompt(tokenizer, prompt, chat_text: bool = False) -> str:
    """The text the model continues (rdo.data.chat.render_prompt, the rule training uses); with
    `chat_text` a string prompt is sent as one user turn of the chat template."""
    if isinstance(prompt, str) and chat_text:
        prompt = [{"role": "user", "content": prompt}]
    return chat.render_prompt(tokenizer, prompt)


def stop_token_ids(tokenizer, model=None) -> list[int]:
    """EOS and the chat template's end-of-turn tokens (rdo.data.chat.end_of_turn_ids), plus the model's
    generation-config EOS ids."""
    ids = list(chat.end_of_turn_ids(tokenizer))
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids += gen_eos if isinstance(gen_eos, list) else [gen_eos]
    return sorted({int(i) for i in ids if i is not None})


def prompt_token_ids(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of rendered prompts, with the BOS rule training uses (rdo.data.tokenize.Encoder)."""
    from rdo.data.tokenize import Encoder, Truncation

    enc = Encoder(tokenizer, Truncation(max_prompt_length=None))
    return [enc.prompt_ids(t) for t in texts]


# --- decoding settings --------------------------------------------------------------------------

@dataclass(frozen=True)
class Decoding:
    """Every setting that changes the generated text (batch size does not)."""

    max_new_tokens: int = 128
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    num_beams: int = 1
    num_return_sequences: int = 1
    num_beam_groups: int = 1
    diversity_penalty: float = 0.0
    seed: int = 0

    @classmethod
    def of(cls, cfg) -> Decoding:
        return cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls)})

    def as_dict(self) -> dict:
        """The settings that apply (sampling knobs only when sampling, beam knobs only with beams)."""
        d = dataclasses.asdict(self)
        if not self.do_sample:
            for k in ("temperature", "top_p", "top_k", "seed"):
                d.pop(k)
        if self.num_beam_groups == 1:
            d.pop("num_beam_groups"), d.pop("diversity_penalty")
        return d

    @property
    def beams_per_prompt(self) -> int:
        """Sequences generate() returns per input: the best beams; a sample is one input per sample."""
        return 1 if self.do_sample else self.num_return_sequences

    def generate_kwargs(self) -> dict:
        # Sampling is GumbelSampler's job, so generate() itself always decodes greedily or by beams.
        kw = dict(max_new_tokens=self.max_new_tokens, do_sample=False, num_beams=self.num_beams,
                  num_return_sequences=self.beams_per_prompt)
        if self.num_beams > 1:
            kw.update(early_stopping=True, length_penalty=1.0)
        if self.num_beam_groups > 1:
            check_diverse_beam_search()
            kw.update(num_beam_groups=self.num_beam_groups, diversity_penalty=self.diversity_penalty)
        return kw


def check_diverse_beam_search() -> None:
    """Diverse (group) beam search left transformers' generate() for a hub `custom_generate` repo."""
    import transformers
    from transformers.generation.configuration_utils import GenerationMode
    from transformers.generation.utils import GENERATION_MODES_MAPPING

    repo = GENERATION_MODES_MAPPING.get(GenerationMode.GROUP_BEAM_SEARCH, "")
    if "/" in repo:
        raise ValueError(
            f"diverse beam search (--num_beam_groups > 1) is not part of the installed transformers {transformers.__version__}: "
            f"it moved to the hub repo {repo} (custom_generate), which rdo does not download and run. "
            "Install a transformers whose generate() still has group beam search (pip install 'transformers<4.56'), "
            "or use --do_sample --num_return_sequences 4 for diverse responses."
        )


def sample_seed(seed: int, row: int, sample: int) -> int:
    """The random stream of one (input row, sample): independent of batching and process count."""
    return int(digest(["rdo.evaluate.generate", seed, row, sample])[:15], 16)


class GumbelSampler:
    """Samples by Gumbel-max: argmax(warped logits + Gumbel noise) is a draw from softmax(warped logits).

    Used as a logits processor under greedy decoding, so each row's noise comes from its own
    generator (one per (row, sample)) instead of one global stream shared by the batch.
    """

    def __init__(self, seeds: list[int], decoding: Decoding):
        from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

        self.seeds, self.gens = seeds, None
        self.warpers = [TemperatureLogitsWarper(decoding.temperature)]
        if decoding.top_k > 0:
            self.warpers.append(TopKLogitsWarper(decoding.top_k))
        if decoding.top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(decoding.top_p))

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        for w in self.warpers:
            scores = w(input_ids, scores)
        if self.gens is None:  # on the logits' device: a (B, V) draw per step must not cross PCIe
            self.gens = [torch.Generator(device=scores.device).manual_seed(s) for s in self.seeds]
        u = torch.stack([torch.rand(scores.shape[1], generator=g, device=scores.device, dtype=torch.float64) for g in self.gens])  # (B, V)
        gumbel = -torch.log(-torch.log(u.clamp_min(1e-300)))
        return scores.double() + gumbel  # filtered tokens stay at -inf


# --- the Python API (also used by the demo) ---------------------------------------------------

def _cut(ids: list[int], stops: set[int]) -> list[int]:
    for i, t in enumerate(ids):
        if t in stops:
            return ids[:i]
    return ids


@torch.inference_mode()
def generate_ids(model, tokenizer, prompt_ids: list[list[int]], decoding: Decoding, *, seeds: list[int] | None = None,
                 batch_size: int = 16, bar=None) -> list[list[list[int]]]:
    """Generated token ids (stop token and after removed) for each prompt: `beams_per_prompt` lists each.

    Prompts run longest first in left-padded batches; results come back in the order given.
    `seeds` (one per prompt) are the sampling streams when `decoding.do_sample`.
    """
    if decoding.do_sample and (seeds is None or len(seeds) != len(prompt_ids)):
        raise ValueError("sampling needs one seed per prompt")
    from transformers import GenerationConfig

    model.eval()
    stops = stop_token_ids(tokenizer, model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    # generate() fills every setting left unset from model.generation_config (a checkpoint's
    # generation_config.json often sets do_sample, temperature, repetition_penalty, ...): swap in
    # the library defaults so the output depends only on `decoding`, which is what is recorded.
    saved, model.generation_config = model.generation_config, GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=stops, pad_token_id=pad)
    try:
        return _generate_batches(model, prompt_ids, decoding, seeds, batch_size, bar, stops, pad)
    finally:
        model.generation_config = saved


def _generate_batches(model, prompt_ids, decoding: Decoding, seeds, batch_size: int, bar, stops: list[int], pad: int):
    from transformers import LogitsProcessorList

    kwargs = decoding.generate_kwargs()
    order = sorted(range(len(prompt_ids)), key=lambda i: -len(prompt_ids[i]))
    out: list = [None] * len(prompt_ids)
    dev = next(model.parameters()).device
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = max(len(prompt_ids[i]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for r, i in enumerate(idx):  # left padding: every row's last prompt token is at the right edge
            ids[r, width - len(prompt_ids[i]):] = torch.tensor(prompt_ids[i])
            mask[r, width - len(prompt_ids[i]):] = 1
        procs = LogitsProcessorList([GumbelSampler([seeds[i] for i in idx], decoding)] if decoding.do_sample else [])
        seqs = model.generate(input_ids=ids.to(dev), attention_mask=mask.to(dev), logits_processor=procs,
                              eos_token_id=stops, pad_token_id=pad, **kwargs)[:, width:].tolist()
        k = decoding.beams_per_prompt
        for r, i in enumerate(idx):
            out[i] = [_cut(s, set(stops)) for s in seqs[r * k : (r + 1) * k]]
        if bar is not None:
            bar.update(len(idx))
            bar.tokens = getattr(bar, "tokens", 0) + sum(len(s) for i in idx for s in out[i])
            bar.set_postfix(tok_per_s=f"{bar.tokens / max(bar.format_dict['elapsed'], 1e-9):.1f}")  # tqdm's own clock
    return out


def decode(tokenizer, ids: list[int]) -> str:
    """What a user reads: the generated text without special (template) tokens."""
    return tokenizer.decode(ids, skip_special_tokens=True)


def generate(model, tokenizer, prompts: list, *, strategy: str = "greedy", max_new_tokens: int = 64,
             num_return_sequences: int = 1, num_beams: int = 4, temperature: float = 1.0, top_p: float = 1.0,
             top_k: int = 0, batch_size: int = 16, chat: bool = True, seed: int = 0) -> list[list[str]]:
    """`num_return_sequences` responses for each prompt (a string, or a message list).

    `chat` renders string prompts as one user turn of the chat template (when the tokenizer has one).
    Sample j of prompt i (0-based) uses the stream `sample_seed(seed, i, j)`.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy={strategy!r}: choose one of {STRATEGIES}")
    decoding = Decoding(max_new_tokens=max_new_tokens, do_sample=strategy == "sample", temperature=temperature, top_p=top_p,
                        top_k=top_k, num_beams=max(num_beams, num_return_sequences) if strategy == "beam" else 1,
                        num_return_sequences=num_return_sequences, seed=seed)
    chat_text = chat and bool(getattr(tokenizer, "chat_template", None))
    ids = prompt_token_ids(tokenizer, [render_prompt(tokenizer, p, chat_text) for p in prompts])
    per_prompt = responses_ids(model, tokenizer, ids, list(range(len(ids))), decoding, batch_size)
    return [[decode(tokenizer, s) for s in seqs] for seqs in per_prompt]


def responses_ids(model, tokenizer, prompt_ids: list[list[int]], rows: list[int], decoding: Decoding, batch_size: int,
                  bar=None) -> list[list[list[int]]]:
    """`num_return_sequences` generated id lists per prompt. Sampling runs one input per (prompt,
    sample), sample j of the prompt with row key r drawn from the stream `sample_seed(seed, r, j)`."""
    n = decoding.num_return_sequences
    if not decoding.do_sample:  # the best beams (or the greedy path) of each prompt
        return generate_ids(model, tokenizer, prompt_ids, decoding, batch_size=batch_size, bar=bar)
    flat = generate_ids(model, tokenizer, [x for x in prompt_ids for _ in range(n)], decoding, batch_size=batch_size, bar=bar,
                        seeds=[sample_seed(decoding.seed, r, j) for r in rows for j in range(n)])
    return [[flat[i * n + j][0] for j in range(n)] for i in range(len(prompt_ids))]


# --- the command ------------------------------------------------------------------------------

def load_policy(cfg: GenerateConfig, device: torch.device):
    """(model, tokenizer, model fingerprint): a causal LM, or a base with a LoRA adapter merged in."""
    from rdo.models import load_causal_lm, load_tokenizer

    path = Path(cfg.model_name_or_path)
    if (path / "adapter_config.json").is_file():
        base = cfg.base_model_name_or_path or json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if not base:
            raise ValueError(f"{path / 'adapter_config.json'}: names no base_model_name_or_path; pass --base_model_name_or_path")
        try:
            from peft import PeftModel
        except ImportError as e:
            raise ImportError("a LoRA adapter needs peft: pip install 'rdo[lora]'") from e
        tok = load_tokenizer(str(path)) if (path / "tokenizer_config.json").is_file() else load_tokenizer(base, revision=cfg.model_revision)
        # --model_revision is the base's (an adapter folder is local)
        base_model = load_causal_lm(base, cfg.torch_dtype, revision=cfg.model_revision, attn_implementation=cfg.attn_implementation)
        model = PeftModel.from_pretrained(base_model, str(path)).merge_and_unload()
        fingerprint = digest({"base": model_fingerprint(base, cfg.model_revision), "adapter": model_fingerprint(str(path))})
    else:
        tok = load_tokenizer(cfg.model_name_or_path, revision=cfg.model_revision)
        model = load_causal_lm(cfg.model_name_or_path, cfg.torch_dtype, revision=cfg.model_revision, attn_implementation=cfg.attn_implementation)
        fingerprint = model_fingerprint(cfg.model_name_or_path, cfg.model_revision)
    return model.to(device).eval(), tok, fingerprint


def prompts_of(cfg: GenerateConfig, tokenizer) -> tuple[list[dict], dict]:
    """One work item per distinct prompt, in input order: {rdo_row, id?, prompt, prompt_text}; plus counts.

    `prompt` is what the input gave (a message list stays a list); `prompt_text` the rendered string.
    """
    from rdo.data import load_records
    from rdo.data.io import read_rows

    loaded = load_records(cfg.dataset_name, split=cfg.dataset_split, tokenizer=tokenizer, skip_invalid=cfg.skip_invalid, prompt_only=True)
    raw = {row: r for row, r in read_rows(cfg.dataset_name, cfg.dataset_split) if isinstance(r, dict)}
    items, seen, duplicates = [], set(), 0
    for rec in loaded.records:
        given = raw[rec["rdo_row"]].get("prompt")
        if isinstance(given, list) or loaded.fmt == "conversational":
            # the data layer already rendered it with the generation prompt
            prompt, text = (given if isinstance(given, list) else rec["prompt"]), rec["prompt"]
        else:
            prompt, text = rec["prompt"], render_prompt(tokenizer, rec["prompt"], cfg.chat_text_prompts)
        if text in seen:
            duplicates += 1
            continue
        seen.add(text)
        item = {"rdo_row": rec["rdo_row"], "prompt": prompt, "prompt_text": text}
        if "id" in rec:
            item["id"] = rec["id"]
        items.append(item)
    return items, {"format": loaded.fmt, "rows": len(loaded.records), "duplicate_prompts": duplicates,
                   "skipped": loaded.skips.as_dict()}


def chunks(items: list[dict], lengths: dict[int, int], shard_size: int) -> list[list[dict]]:
    """Prompts of similar length together, `shard_size` per shard: a fixed function of the data."""
    order = sorted(items, key=lambda it: (-lengths[it["rdo_row"]], it["rdo_row"]))
    return [order[i : i + shard_size] for i in range(0, len(order), shard_size)]


def generate_command(cfg: GenerateConfig, on_shard=None) -> dict:
    """Generate responses for `cfg.dataset_name` into `cfg.output`; returns the summary (also written next to it).

    `on_shard(name)` is called after each shard is written (tests use it to simulate a kill).
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    distributed.init()
    decoding = Decoding.of(cfg)
    if decoding.num_beam_groups > 1:
        check_diverse_beam_search()  # fail before loading anything
    model, tok, model_fp = load_policy(cfg, distributed.device(cfg.device))
    items, counts = prompts_of(cfg, tok)
    lengths = dict(zip([it["rdo_row"] for it in items], map(len, prompt_token_ids(tok, [it["prompt_text"] for it in items]))))
    manifest = {
        "model": model_fp, "tokenizer": tokenizer_fingerprint(tok), "torch_dtype": cfg.torch_dtype,
        "prompts": digest([[it["rdo_row"], it["prompt_text"]] for it in items]),
        "decoding": decoding.as_dict(), "shard_size": cfg.shard_size,
    }
    output = Path(cfg.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with distributed.main_first():
        shards = Shards(output, manifest, cfg.overwrite and distributed.is_main(), key="key")

    work = [(f"chunk-{c:05d}", chunk) for c, chunk in enumerate(chunks(items, lengths, cfg.shard_size))]
    todo = [(name, chunk) for name, chunk in distributed.my_share(work) if not shards.done(name)]
    n = decoding.num_return_sequences
    bar = tqdm(total=sum(len(c) for _, c in todo) * (n if decoding.do_sample else 1), unit="seq",
               desc=f"generate (rank {distributed.rank()})" if distributed.world_size() > 1 else "generate")
    started = time.perf_counter()  # the summary's clock; the bar keeps tqdm's (overwriting bar.start_t mixed the two)
    for name, chunk in todo:
        shards.write(name, _generate_chunk(model, tok, chunk, decoding, cfg.batch_size, bar))
        if on_shard is not None:
            on_shard(name)
    bar.close()
    tokens, seconds = getattr(bar, "tokens", 0), time.perf_counter() - started
    distributed.barrier()  # every shard is written before the main process merges them
    summary = {"tokens_generated": distributed.gather(tokens), "seconds": max(distributed.gather(seconds))}
    if distributed.is_main():
        summary = finalise(cfg, output, shards, items, decoding, counts, summary)
    distributed.barrier()
    return summary


def _generate_chunk(model, tok, chunk: list[dict], decoding: Decoding, batch_size: int, bar) -> list[dict]:
    """One shard's entries: {key: [rdo_row, sample_index], response, n_tokens}."""
    prompt_ids = prompt_token_ids(tok, [it["prompt_text"] for it in chunk])
    per_prompt = responses_ids(model, tok, prompt_ids, [it["rdo_row"] for it in chunk], decoding, batch_size, bar)
    return [{"key": [it["rdo_row"], j], "response": decode(tok, s), "n_tokens": len(s)}
            for it, seqs in zip(chunk, per_prompt) for j, s in enumerate(seqs)]


def finalise(cfg: GenerateConfig, output: Path, shards: Shards, items: list[dict], decoding: Decoding, counts: dict, timing: dict) -> dict:
    """Write the shards' responses in input order as the output JSONL, and the summary next to it."""
    from rdo.utils import atomic

    n = decoding.num_return_sequences
    order = [(it["rdo_row"], j) for it in items for j in range(n)]
    entries = distributed.in_input_order(shards.read_all().values(), order, key=lambda e: tuple(e["key"]))
    settings = decoding.as_dict()
    by_row = {it["rdo_row"]: it for it in items}
    rows = []
    for e in entries:
        it = by_row[e["key"][0]]
        row = {k: it[k] for k in ("id",) if k in it}
        row |= {"rdo_row": it["rdo_row"], "prompt": it["prompt"], "prompt_text": it["prompt_text"], "response": e["response"],
                "sample_index": e["key"][1], "model": cfg.model_name_or_path, "decoding": settings}
        rows.append(row)
    atomic.write_jsonl(output, rows)
    lengths = [e["n_tokens"] for e in entries]
    summary = {"model": cfg.model_name_or_path, "dataset": cfg.dataset_name, "output": str(output), **counts,
               "prompts": len(items), "rows_written": len(rows), "decoding": settings,
               "mean_response_tokens": sum(lengths) / len(lengths) if lengths else None,
               "hit_max_new_tokens": sum(x >= decoding.max_new_tokens for x in lengths),
               "processes": distributed.world_size(), "seconds": timing["seconds"],
               "tokens_per_s_this_run": sum(timing["tokens_generated"]) / timing["seconds"] if timing["seconds"] > 0 else None}
    atomic.write_json(output.with_name(output.stem + ".summary.json"), summary)
    if not cfg.keep_shards:
        shards.remove()
    log.info("wrote %s (%d rows, %d prompts)", output, len(rows), len(items))
    return summary

