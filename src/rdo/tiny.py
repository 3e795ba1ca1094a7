"""Tiny random causal LMs with a byte-level tokenizer, built locally in seconds.

Tests, benchmarks and smoke runs need a real `transformers` model and tokenizer without touching a
hub. These are real Llama models (2 layers by default) and a real fast tokenizer whose vocabulary is
the 256 bytes plus four special tokens, so any text round-trips and token counts are predictable:
one token per UTF-8 byte.
"""

from __future__ import annotations

from pathlib import Path

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]

# A minimal chat template so conversational data can be rendered by the tiny tokenizer too.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def byte_tokenizer():
    """A `PreTrainedTokenizerFast` with one token per byte, BOS prepended, `</s>` as EOS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    byte_alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in sorted(byte_alphabet):
        vocab[ch] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def tiny_llama(vocab_size: int, *, layers: int = 2, hidden: int = 64, heads: int = 4, seed: int = 0):
    """A randomly initialised `LlamaForCausalLM` small enough to train on a CPU in seconds."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=1024,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


def build_tiny_model(out_dir: str | Path, **kwargs) -> Path:
    """Write a tiny causal LM + byte tokenizer to `out_dir` (a normal `save_pretrained` folder)."""
    out = Path(out_dir)
    tok = byte_tokenizer()
    model = tiny_llama(len(tok), **kwargs)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
