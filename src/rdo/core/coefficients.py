"""The one place a raw reward difference R becomes a training weight (paper Eq. 2: loss × R^α).

The paper leaves two things open; rdo decides them explicitly, and reports them:

- **R ≤ 0** (the scorer disagrees with the label, or sees no difference). R^α is undefined or zero
  there. `nonpositive="clip"` (default) raises R to `floor` first, so such pairs count very little
  — the paper's rationale is that pairs the scorer doubts should count little. `"drop"` removes
  them from training (counted). `"abs"` uses |R| — trusting the scorer's confidence but not its
  sign. Every R below `floor` is raised to `floor` under clip and abs, so no weight is 0.
- **Normalisation.** `normalize="mean"` (default) rescales weights to mean 1 over the whole dataset
  (before any shuffling or sharding), so α changes which pairs matter, not the effective learning
  rate. `"none"` reproduces the paper literally.

α = 0 is the plain method, exactly: every weight is 1.0 and nothing is dropped, whatever the
other settings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

NONPOSITIVE = ("clip", "drop", "abs")
NORMALIZE = ("mean", "none")
QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)


@dataclass(frozen=True)
class CoefficientPolicy:
    alpha: float = 0.5
    nonpositive: str = "clip"
    floor: float = 1e-2
    normalize: str = "mean"

    def __post_init__(self):
        if not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise ValueError(f"alpha={self.alpha} must be a finite number >= 0 (the paper uses 0, 0.5 and 1)")
        if self.nonpositive not in NONPOSITIVE:
            raise ValueError(f"nonpositive={self.nonpositive!r}: choose one of {NONPOSITIVE}")
        if not self.floor > 0:
            raise ValueError(f"floor={self.floor} must be > 0 so no weight is zero or undefined")
        if self.normalize not in NORMALIZE:
            raise ValueError(f"normalize={self.normalize!r}: choose one of {NORMALIZE}")

    def weights(self, reward_diffs, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Map R (N,) to (weights (N,), keep mask (N,) bool, statistics dict).

        Dropped rows get weight 0 and keep=False; the caller removes them from the dataset.
        With α = 0 R is not needed: pass `reward_diffs=None` and the row count `n`.
        """
        if reward_diffs is None:
            if self.alpha != 0:
                raise ValueError("alpha > 0 needs reward differences")
            return torch.ones(n), torch.ones(n, dtype=torch.bool), self._plain_stats(n)
        r = torch.as_tensor(reward_diffs, dtype=torch.float64).flatten()  # (N,)
        if r.numel() == 0:
            raise ValueError("no reward differences to weight")
        if not torch.isfinite(r).all():
            bad = int((~torch.isfinite(r)).sum())
            raise ValueError(f"{bad} reward difference(s) are NaN or infinite; the data layer should have caught them")
        nonpos = r <= 0
        keep = torch.ones_like(r, dtype=torch.bool)
        if self.alpha == 0:
            w = torch.ones_like(r)  # the plain method, exactly
            raised = torch.zeros_like(keep)
        else:
            if self.nonpositive == "drop":
                keep = ~nonpos
                if not keep.any():
                    raise ValueError("every reward difference is <= 0, so nonpositive='drop' leaves no training pairs")
            base = r.abs() if self.nonpositive == "abs" else r
            raised = keep & (base < self.floor)
            w = torch.where(keep, base.clamp(min=self.floor).pow(self.alpha), torch.zeros_like(r))  # Eq. (2): R^α
        norm = 1.0
        if self.normalize == "mean" and self.alpha != 0:
            norm = float(w[keep].mean())
            w = w / norm
        stats = {
            "policy": {"alpha": self.alpha, "nonpositive": self.nonpositive, "floor": self.floor, "normalize": self.normalize},
            "n": r.numel(),
            "n_kept": int(keep.sum()),
            "frac_nonpositive": float(nonpos.double().mean()),
            "frac_raised_to_floor": float(raised.double().mean()),
            "frac_dropped": float((~keep).double().mean()),
            "normalizer": norm,
            "reward_diff": _summary(r),
            "weight": _summary(w[keep]),
        }
        return w.float(), keep, stats

    def _plain_stats(self, n: int) -> dict:
        """α = 0 without any R: every weight is 1.0, nothing is clipped or dropped."""
        ones = torch.ones(n, dtype=torch.float64)
        return {"policy": {"alpha": 0.0, "nonpositive": self.nonpositive, "floor": self.floor, "normalize": self.normalize},
                "n": n, "n_kept": n, "frac_nonpositive": None, "frac_raised_to_floor": 0.0, "frac_dropped": 0.0,
                "normalizer": 1.0, "reward_diff": None, "weight": _summary(ones)}


def ranked_weights(
    policy: CoefficientPolicy, scores: list[list[float]], reward_diffs: list[list[list[float]] | None]
) -> tuple[list[list[list[float]]], list[bool], dict]:
    """RRHF+rc: a weight for every ordered pair (i, j) with scores[i] < scores[j] of every ranked row.

    `reward_diffs[n]` is row n's K x K matrix with [i][j] = R for "response j beats response i",
    or None, and then R_ij = scores[j] - scores[i] (the scores being the reward model's). The policy
    sees the flat list of all used pairs of the dataset, so `normalize="mean"` gives mean 1 over
    pairs. Returns (per-row K x K weights, 0 where unused or dropped; per-row keep, False when
    all of a row's pairs were dropped; statistics over pairs).
    """
    flat, where = [], []
    for n, (s, diffs) in enumerate(zip(scores, reward_diffs)):
        for i, s_i in enumerate(s):
            for j, s_j in enumerate(s):
                if s_i < s_j:  # j is better: the pair RRHF ranks
                    flat.append(s_j - s_i if diffs is None else diffs[i][j])
                    where.append((n, i, j))
    w, keep, stats = policy.weights(flat)
    out = [[[0.0] * len(s) for _ in s] for s in scores]
    row_keep = [False] * len(scores)
    for (n, i, j), w_ij, k in zip(where, w.tolist(), keep.tolist()):
        out[n][i][j] = w_ij
        row_keep[n] = row_keep[n] or k
    return out, row_keep, stats


def _summary(x: torch.Tensor) -> dict:
    q = torch.quantile(x, torch.tensor(QUANTILES, dtype=x.dtype)).tolist()
    out = {"mean": float(x.mean()), "std": float(x.std()) if x.numel() > 1 else 0.0}
    out.update({f"q{int(p * 100):02d}": v for p, v in zip(QUANTILES, q)})
    return out


def format_stats(stats: dict) -> str:
    """A few human-readable lines for logs."""
    p = stats["policy"]
    if stats["reward_diff"] is None:
        return f"coefficients: alpha=0 (the plain method): every one of {stats['n']} weights is 1.0"
    w, r = stats["weight"], stats["reward_diff"]
    return (
        f"coefficients: alpha={p['alpha']} nonpositive={p['nonpositive']} floor={p['floor']} normalize={p['normalize']}\n"
        f"  R: mean {r['mean']:.4g}  q05 {r['q05']:.4g}  median {r['q50']:.4g}  q95 {r['q95']:.4g}  "
        f"({stats['frac_nonpositive']:.1%} <= 0)\n"
        f"  weight: mean {w['mean']:.4g}  min {w['q00']:.4g}  median {w['q50']:.4g}  max {w['q100']:.4g}  "
        f"raised to floor {stats['frac_raised_to_floor']:.1%}  dropped {stats['frac_dropped']:.1%}"
    )
