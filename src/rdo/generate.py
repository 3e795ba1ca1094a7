"""Responses from a causal LM: greedy, beam search or sampling, in left-padded batches."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

STRATEGIES = ("greedy", "beam", "sample")


def render_prompt(tokenizer, prompt: str, chat: bool) -> str:
    """A plain prompt, or a single user turn rendered with the chat template."""
    if chat and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    return prompt


@torch.inference_mode()
def generate(
    model, tokenizer, prompts: list[str], *, strategy: str = "greedy", max_new_tokens: int = 64,
    num_return_sequences: int = 1, num_beams: int = 4, temperature: float = 1.0, top_p: float = 1.0,
    batch_size: int = 16, chat: bool = True, seed: int = 0,
) -> list[list[str]]:
    """`num_return_sequences` completions for each prompt (only the new text, special tokens removed)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy={strategy!r}: choose one of {STRATEGIES}")
    torch.manual_seed(seed)
    model.eval()
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation continues from the right end of every row
    kwargs = dict(max_new_tokens=max_new_tokens, num_return_sequences=num_return_sequences,
                  pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    if strategy == "greedy":
        kwargs.update(do_sample=False)
    elif strategy == "beam":
        kwargs.update(do_sample=False, num_beams=max(num_beams, num_return_sequences), early_stopping=True)
    else:
        kwargs.update(do_sample=True, temperature=temperature, top_p=top_p)
    out: list[list[str]] = []
    try:
        for s in tqdm(range(0, len(prompts), batch_size), desc=f"generate ({strategy})", unit="batch"):
            texts = [render_prompt(tokenizer, p, chat) for p in prompts[s : s + batch_size]]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not chat).to(model.device)
            seqs = model.generate(**enc, **kwargs)[:, enc["input_ids"].shape[1]:]
            decoded = tokenizer.batch_decode(seqs, skip_special_tokens=True)
            out += [[d.strip() for d in decoded[i : i + num_return_sequences]] for i in range(0, len(decoded), num_return_sequences)]
    finally:
        tokenizer.padding_side = side
    return out
