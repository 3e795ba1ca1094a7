"""Intervals for every evaluation command, in one place: percentile bootstrap of a mean, of a paired
difference, and of rates (win / tie / loss) computed on the same resampled examples.

All take plain sequences and a seed, so each command's numbers are reproducible and testable
against hand-computed values.
"""

from __future__ import annotations

from typing import Sequence

import torch

LEVEL = 0.95
CHUNK = 100  # resamples at a time: memory stays at CHUNK x N


def _quantiles(stats: torch.Tensor, level: float) -> list[float]:
    q = torch.tensor([(1 - level) / 2, 1 - (1 - level) / 2], dtype=torch.float64)
    return torch.quantile(stats, q).tolist()


def resample_means(values: torch.Tensor, resamples: int, seed: int) -> torch.Tensor:
    """(resamples,) means of `values` (N,) or (N, C) column-wise: (resamples, C), over rows drawn with replacement."""
    n = values.shape[0]
    gen = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, resamples, CHUNK):
        idx = torch.randint(n, (min(CHUNK, resamples - start), n), generator=gen)
        out.append(values[idx].double().mean(dim=1))
    return torch.cat(out)


def bootstrap_ci(values: Sequence[float] | torch.Tensor, resamples: int = 1000, seed: int = 0, level: float = LEVEL) -> list[float] | None:
    """Percentile bootstrap interval [lo, hi] of the mean of `values`; None when there is nothing to resample."""
    v = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    return bootstrap_mean(v, resamples, seed, level)["ci95"] if v.numel() else None


def cluster_means(values: Sequence[float], clusters: Sequence) -> list[float]:
    """The mean of `values` within each cluster (e.g. the samples of one prompt), in first-seen order.

    Several answers to one prompt are not independent: intervals resample prompts, so each prompt
    enters as the mean of its answers.
    """
    groups: dict = {}
    for v, c in zip(values, clusters, strict=True):
        groups.setdefault(c, []).append(v)
    return [sum(g) / len(g) for g in groups.values()]


def bootstrap_mean(values: Sequence[float] | torch.Tensor, resamples: int = 1000, seed: int = 0, level: float = LEVEL) -> dict:
    """{"mean", "ci95", "se", "mde"} of `values`: the percentile interval and standard error from one set of
    resamples, and the smallest true mean the interval would exclude 0 for with 80% power
    (`min_detectable_effect`). Interval, se and mde are None when there is nothing to resample."""
    v = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    if v.numel() == 0:
        raise ValueError("no values to average")
    if resamples <= 0:
        return {"mean": float(v.mean()), "ci95": None, "se": None, "mde": None}
    means = resample_means(v, resamples, seed)
    se = float(means.std())
    return {"mean": float(v.mean()), "ci95": _quantiles(means, level), "se": se, "mde": min_detectable_effect(se, level)}


def paired_bootstrap_ci(a: Sequence[float], b: Sequence[float], resamples: int = 1000, seed: int = 0, level: float = LEVEL) -> list[float] | None:
    """Interval of mean(a - b) over the same examples (a[i] and b[i] belong to one prompt)."""
    if len(a) != len(b):
        raise ValueError(f"paired values differ in length: {len(a)} vs {len(b)}")
    return bootstrap_ci([x - y for x, y in zip(a, b)], resamples, seed, level)


def rate_cis(outcomes: Sequence[str], categories: Sequence[str], resamples: int = 1000, seed: int = 0,
             level: float = LEVEL) -> dict[str, dict]:
    """Rates of each category (e.g. win / tie / loss) with bootstrap intervals from one set of resamples.

    Returns {category: {"n": count, "rate": count / N, "ci95": [lo, hi] or None}}.
    """
    n = len(outcomes)
    unknown = sorted(set(outcomes) - set(categories))
    if unknown:
        raise ValueError(f"outcomes {unknown} are not among the categories {list(categories)}")
    onehot = torch.tensor([[o == c for c in categories] for o in outcomes], dtype=torch.float64).reshape(n, len(categories))
    means = resample_means(onehot, resamples, seed) if resamples > 0 and n else None
    out = {}
    for j, c in enumerate(categories):
        count = int(onehot[:, j].sum()) if n else 0
        out[c] = {"n": count, "rate": count / n if n else None,
                  "ci95": _quantiles(means[:, j], level) if means is not None else None}
    return out


def format_rate(s: dict, missing: str = "-") -> str:
    """One `rate_cis` entry as a table cell: 'rate% [lo, hi]' in percent."""
    if s["rate"] is None:
        return missing
    lo, hi = s["ci95"] or (s["rate"], s["rate"])
    return f"{100 * s['rate']:5.1f} [{100 * lo:4.1f},{100 * hi:5.1f}]"


def two_way_bootstrap(values: Sequence[Sequence[float]] | torch.Tensor, resamples: int = 2000, seed: int = 0,
                      level: float = LEVEL) -> dict:
    """Mean of an (S, P) grid (e.g. seeds x prompts) with an interval that resamples rows and columns.

    Rows and columns are drawn with replacement independently, so both the seed-to-seed and the
    prompt-to-prompt spread widen the interval (resampling the S*P cells alone would treat a prompt
    seen under 5 seeds as 5 independent prompts). Returns {"mean", "ci95", "se", "n_rows", "n_cols"};
    `se` is the standard deviation of the resampled means.
    """
    v = torch.as_tensor(values, dtype=torch.float64)
    if v.dim() != 2 or v.numel() == 0:
        raise ValueError(f"expected a non-empty (rows, columns) grid, got shape {tuple(v.shape)}")
    s, p = v.shape
    gen = torch.Generator().manual_seed(seed)
    means = []
    for start in range(0, resamples, CHUNK):
        k = min(CHUNK, resamples - start)
        rows = torch.randint(s, (k, s), generator=gen)  # (k, S)
        cols = torch.randint(p, (k, p), generator=gen)  # (k, P)
        picked = v[rows[:, :, None], cols[:, None, :]]  # (k, S, P)
        means.append(picked.mean(dim=(1, 2)))
    means = torch.cat(means)
    return {"mean": float(v.mean()), "ci95": _quantiles(means, level), "se": float(means.std()), "n_rows": s, "n_cols": p}


def min_detectable_effect(se: float, level: float = LEVEL, power: float = 0.8) -> float:
    """Smallest true difference a two-sided test at 1 - `level` detects with probability `power`, given the
    standard error `se` of the estimate: (z_{1-(1-level)/2} + z_power) * se, i.e. 2.80 x se at 95% / 80%."""
    normal = torch.distributions.Normal(0.0, 1.0)
    z = normal.icdf(torch.tensor([1 - (1 - level) / 2, power], dtype=torch.float64))
    return float(z.sum()) * se
