"""The algorithm registry: a method name -> the data it trains on, the batch fields it reads, its step.

One trainer serves every method (`rdo.trainer.RDOTrainer`); a method is data, not a subclass.
"""

from __future__ import annotations

from rdo.methods.base import Method, StepOutput
from rdo.methods.kto import KTO
from rdo.methods.pairwise import DPO, IPO, SIMPO
from rdo.methods.rrhf import RRHF

REGISTRY: dict[str, Method] = {m.name: m for m in (DPO, IPO, RRHF, KTO, SIMPO)}

__all__ = ["REGISTRY", "Method", "StepOutput", "get_method"]


def get_method(name: str) -> Method:
    if name not in REGISTRY:
        raise ValueError(f"method {name!r} is not available; choose one of {sorted(REGISTRY)}")
    return REGISTRY[name]
