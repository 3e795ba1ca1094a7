"""Loading policy models and tokenizers the same way in every command."""

from __future__ import annotations

import torch

DTYPES = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(name_or_path)
    if tok.pad_token_id is None:  # many causal LMs ship without one; padding is masked anyway
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(name_or_path: str, torch_dtype: str = "auto"):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(name_or_path, dtype=DTYPES[torch_dtype])


def disable_dropout(model) -> int:
    """Turn off all of `model`'s own dropout in place; returns how many dropouts were on.

    TRL's `disable_dropout_in_model` zeroes `nn.Dropout` modules, but many architectures keep an
    attention dropout as a float they pass to the attention kernel in train mode (Llama's
    `attention_dropout`, OPT's `dropout`): those are zeroed too. Call it before adding LoRA, so
    `--lora_dropout` (the adapter's own regulariser) stays as the user set it.
    """
    n = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            n += module.p > 0
            module.p = 0.0
        for name, value in vars(module).items():
            if isinstance(value, float) and not isinstance(value, bool) and name.endswith(("dropout", "pdrop")):
                n += value > 0
                setattr(module, name, 0.0)
    return int(n)


def add_lora(model, r: int, alpha: int, dropout: float, target_modules: str, task_type: str = "CAUSAL_LM"):
    """Wrap `model` with a fresh LoRA adapter; the base (adapter disabled) is then the reference."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as e:
        raise ImportError("LoRA needs peft: pip install 'rdo[lora]'") from e
    targets = "all-linear" if target_modules == "all-linear" else [m.strip() for m in target_modules.split(",") if m.strip()]
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, task_type=task_type)
    return get_peft_model(model, config)


def save_trained(trainer, tokenizer, cfg, metrics: dict, prepare=None) -> bool:
    """Write a normal `save_pretrained` folder to `cfg.output_dir` (LoRA merged, adapter kept in adapter/),
    plus the resolved config and metrics as JSON. `prepare(model)` runs just before saving.

    Only the main process writes; returns whether this process did.
    """
    import json
    from pathlib import Path

    if not trainer.is_world_process_zero():
        return False
    out = Path(cfg.output_dir)
    model = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(model, "merge_and_unload"):
        model.save_pretrained(out / "adapter")
        model = model.merge_and_unload()
    if prepare is not None:
        prepare(model)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "rdo_config.json").write_text(json.dumps(cfg.to_dict(), indent=2, default=str))
    (out / "train_metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    return True
