"""Models, tokenizer and preference data that every benchmark builds locally, the same in every process.

Nothing is downloaded or carried: a model is a `transformers` config with seeded random weights, and
the tokenizer is word-level, one token per word `w<id>`, so a text of n words is exactly n tokens and
any vocabulary size can be matched. Speed does not depend on the weights' values, only on shapes.
"""

from __future__ import annotations

import random

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]  # ids 0..3, as in rdo.tiny

# name -> LlamaConfig fields. Real architectures, random weights.
MODELS: dict[str, dict] = {
    # 2 layers, for --quick and the smoke test
    "tiny": dict(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True),
    # SmolLM2-135M(-Instruct): its config.json, with our special-token ids
    "smollm2-135m": dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, head_dim=64, rms_norm_eps=1e-5,
                         rope_theta=100000.0, tie_word_embeddings=True),
    # Llama-3.2-1B's shape (1.24B parameters; 128k vocabulary, so the LM head dominates the logits memory)
    "llama-1b": dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                     num_attention_heads=32, num_key_value_heads=8, head_dim=64, rms_norm_eps=1e-5,
                     rope_theta=500000.0, tie_word_embeddings=True),
    # Llama-3.2-1B's layer and vocabulary shape with 2 of its 16 layers: the 128k-vocabulary LM head and
    # its logits are what this row measures, and a 2-layer model fits (with Adam) in a CPU's memory
    "llama-1b-2l": dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=2,
                        num_attention_heads=32, num_key_value_heads=8, head_dim=64, rms_norm_eps=1e-5,
                        rope_theta=500000.0, tie_word_embeddings=True),
}


def build_model(name: str, device: str, seed: int = 0):
    """`LlamaForCausalLM` with `MODELS[name]`'s shape, fp32, initialised from `seed` directly on `device`.

    Same name, device and seed give bit-identical weights in every process.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(max_position_embeddings=4096, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                         attention_dropout=0.0, **MODELS[name])
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM(config)
    return model.float()


def weights_checksum(model) -> float:
    """A cheap fingerprint of every weight, to confirm both frameworks start from the same model."""
    import torch

    with torch.no_grad():
        return float(sum(p.double().sum() for p in model.parameters()))


def word_tokenizer(vocab_size: int):
    """A real `PreTrainedTokenizerFast`: ids 0..3 are special, every other id is the word `w<id>`.

    No BOS is added (like SmolLM2's tokenizer), so rdo and TRL both see exactly the words' ids.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    vocab.update({f"w{i}": i for i in range(len(SPECIAL_TOKENS), vocab_size)})
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>")


def preference_rows(n: int, vocab_size: int, prompt_len: int, response_len: tuple[int, int], seed: int = 0) -> list[dict]:
    """`n` standard preference rows of exact token lengths, plus a positive `rdo_reward_diff`.

    Prompts have `prompt_len` words; chosen and rejected responses each `response_len[0]..[1]` words
    (inclusive, drawn independently), with a leading space so prompt + response splits cleanly.
    """
    rng = random.Random(seed)
    lo = len(SPECIAL_TOKENS)

    def words(k: int) -> str:
        return " ".join(f"w{rng.randrange(lo, vocab_size)}" for _ in range(k))

    rows = []
    for _ in range(n):
        rows.append({
            "prompt": words(prompt_len),
            "chosen": " " + words(rng.randint(*response_len)),
            "rejected": " " + words(rng.randint(*response_len)),
            "rdo_reward_diff": round(rng.uniform(0.05, 3.0), 4),
        })
    return rows


def tokens_in_row(row: dict) -> int:
    """Non-pad tokens a pair contributes to a batch: prompt+chosen+EOS and prompt+rejected+EOS."""
    p, c, r = (len(row[k].split()) for k in ("prompt", "chosen", "rejected"))
    return 2 * p + c + r + 2
