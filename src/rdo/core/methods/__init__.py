"""The algorithm registry: a method name -> the data it trains on, the batch fields it reads, its step.

One trainer serves every method (`rdo.train.trainer.RDOTrainer`); a method is data, not a subclass.
"""

from __future__ import annotations

from dataclasses import fields

from rdo.core.methods.base import Method, StepOutput
from rdo.core.methods.kto import KTO
from rdo.core.methods.pairwise import DPO, IPO, SIMPO
from rdo.core.methods.reward_aware import MMPO, ODPO, RPO
from rdo.core.methods.rrhf import RRHF

REGISTRY: dict[str, Method] = {m.name: m for m in (DPO, IPO, RRHF, KTO, SIMPO, ODPO, MMPO, RPO)}

METHOD_OPTIONS = tuple(dict.fromkeys(o for m in REGISTRY.values() for o in m.reads))  # every method-specific option

__all__ = ["METHOD_OPTIONS", "REGISTRY", "Method", "StepOutput", "check_method_options", "get_method"]


def get_method(name: str) -> Method:
    if name not in REGISTRY:
        raise ValueError(f"method {name!r} is not available; choose one of {sorted(REGISTRY)}")
    return REGISTRY[name]


def check_method_options(cfg) -> None:
    """Refuse a method-specific option set (away from its default) that `cfg.method` does not read.

    Which method reads which option is data in the registry (`Method.options`), so a new method or
    option needs no new check here.
    """
    method = get_method(cfg.method)
    defaults = {f.name: f.default for f in fields(cfg)}
    unused = [o for o in METHOD_OPTIONS if o not in method.reads and getattr(cfg, o) != defaults[o]]
    if unused:
        users = {o: sorted(m.name for m in REGISTRY.values() if o in m.reads) for o in unused}
        detail = "; ".join(f"--{o} (read by {', '.join(u)})" for o, u in users.items())
        raise ValueError(f"--method {method.name} does not use {detail}: remove it, or choose a method that reads it")
