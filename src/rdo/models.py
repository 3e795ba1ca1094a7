"""Loading policy models and tokenizers the same way in every command."""

from __future__ import annotations

import torch

DTYPES = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# Pickle files a model folder may hold that are not weights (a Trainer checkpoint's own state).
_NOT_WEIGHTS = {"training_args.bin", "optimizer.pt", "scheduler.pt", "scaler.pt"}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def check_safetensors(name_or_path: str) -> None:
    """Refuse a local folder whose weights exist only as pickle files (loading one can run arbitrary code).

    Hub ids are loaded with `use_safetensors=True`, which refuses their pickle files the same way.
    """
    from pathlib import Path

    folder = Path(name_or_path)
    if not folder.is_dir():
        return
    pickles = sorted(p for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES and p.name not in _NOT_WEIGHTS
                     and not p.name.startswith("rng_state"))
    if pickles and not any(folder.glob("*.safetensors")):
        raise ValueError(
            f"{pickles[0]}: pickle weights are refused (loading them can run arbitrary code); "
            "convert the model to safetensors (save_pretrained writes them by default)"
        )


def from_pretrained_kwargs(cfg_or_trust) -> dict:
    """The safety options every `from_pretrained` of weights gets: safetensors only, remote code only if asked."""
    trust = cfg_or_trust if isinstance(cfg_or_trust, bool) else bool(getattr(cfg_or_trust, "trust_remote_code", False))
    return {"use_safetensors": True, "trust_remote_code": trust}


def check_revision(name_or_path: str, revision: str | None) -> None:
    """A revision names a hub branch, tag or commit; a local folder has none, so asking for one is an error."""
    from pathlib import Path

    if revision is not None and Path(name_or_path).exists():
        raise ValueError(f"--model_revision {revision!r}: {name_or_path} is a local folder, which has no revisions; "
                         "drop the flag, or give a hub id")


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False, revision: str | None = None):
    from transformers import AutoTokenizer

    check_revision(name_or_path, revision)
    tok = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, revision=revision or "main")
    if tok.pad_token_id is None:  # many causal LMs ship without one; padding is masked anyway
        tok.pad_token = tok.eos_token
    return tok


def load_pretrained(auto_cls, name_or_path: str, torch_dtype: str = "auto", trust_remote_code: bool = False,
                    revision: str | None = None, attn_implementation: str | None = None, **kw):
    """`auto_cls.from_pretrained` with the safety options (safetensors weights only, remote code only if asked),
    the hub revision (None: main; refused for a local folder) and the attention kernel (None: transformers' choice)."""
    check_safetensors(name_or_path)
    check_revision(name_or_path, revision)
    if attn_implementation is not None:
        kw["attn_implementation"] = attn_implementation
    return auto_cls.from_pretrained(name_or_path, dtype=DTYPES[torch_dtype], revision=revision or "main",
                                    **from_pretrained_kwargs(trust_remote_code), **kw)


def load_causal_lm(name_or_path: str, torch_dtype: str = "auto", trust_remote_code: bool = False,
                   revision: str | None = None, attn_implementation: str | None = None):
    from transformers import AutoModelForCausalLM

    return load_pretrained(AutoModelForCausalLM, name_or_path, torch_dtype, trust_remote_code, revision, attn_implementation)


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


FINAL_STAGING = "rdo-final" + ".tmp-staging"  # clean_leftovers (rdo.utils.atomic) removes it after a crash


def save_trained(trainer, tokenizer, cfg, metrics: dict, prepare=None, extra=None) -> bool:
    """Write the final model to `cfg.output_dir` through the Trainer's own save path, then publish it.

    The folder: a normal `save_pretrained` model (LoRA merged), the adapter in adapter/, rdo_config.json
    and train_metrics.json. Every process calls this (ZeRO-3 / FSDP gather the full weights collectively);
    the main process merges LoRA on a CPU copy built from that consolidated state dict, never on partitioned
    parameters. Everything is written to a staging folder, fsynced, and moved into place file by file,
    train_metrics.json last, so a reader sees whole files and a complete run has train_metrics.json.
    `prepare(model)` runs on the model to save (e.g. to set config fields); `extra(folder)` adds files.
    With --push_to_hub the published folder is pushed with `trainer.push_to_hub`. Returns whether this
    process wrote.
    """
    from pathlib import Path

    from rdo.utils import atomic

    out = Path(cfg.output_dir)
    staging = out / FINAL_STAGING
    main = trainer.is_world_process_zero()
    if main and staging.exists():
        atomic.clean_leftovers(out)
    trainer.accelerator.wait_for_everyone()
    model = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(model, "merge_and_unload"):  # LoRA
        trainer.save_model(str(staging / "adapter"), _internal_call=True)  # Trainer's PEFT path (ZeRO-3 aware)
        state = trainer.accelerator.get_state_dict(trainer.model_wrapped if trainer.is_deepspeed_enabled else trainer.model)
        if main:
            merged = merge_lora_on_cpu(model, state)
            if prepare is not None:
                prepare(merged)
            merged.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
    else:
        if prepare is not None:
            prepare(model)
        trainer.save_model(str(staging), _internal_call=True)  # consolidated on ZeRO-3 / FSDP
    if main:
        for pickled in staging.rglob("training_args.bin"):  # a pickle; rdo_config.json holds the config
            pickled.unlink()
        if extra is not None:
            extra(staging)
        atomic.write_json(staging / "rdo_config.json", cfg.to_dict())
        atomic.write_json(staging / "train_metrics.json", metrics)
        last = ["config.json", "train_metrics.json"]  # loadable only once the weights are there; complete last
        for entry in sorted(staging.iterdir(), key=lambda p: (p.name in last, last.index(p.name) if p.name in last else 0)):
            atomic.move_into_place(entry, out / entry.name)
        staging.rmdir()
    trainer.accelerator.wait_for_everyone()
    if cfg.push_to_hub:  # cannot be tested offline: this is the call path
        trainer.final_model_saved = True  # push_to_hub's own save_model must not overwrite the merged model
        trainer.push_to_hub(commit_message="rdo: final model")
    return main


def merge_lora_on_cpu(peft_model, state: dict):
    """A merged copy of `peft_model` built on the CPU from its full (consolidated) state dict."""
    from peft import get_peft_model

    base = peft_model.get_base_model()
    fresh = type(base)._from_config(base.config, dtype=base.dtype)
    fresh = get_peft_model(fresh, peft_model.peft_config[peft_model.active_adapter])
    fresh.load_state_dict({k: v.detach().cpu() for k, v in state.items()}, strict=True)
    return fresh.merge_and_unload()
