"""An oracle scorer of controlled accuracy, for the dose-response study (experiments/dose_response.py).

R = gap + sigma * z, where gap = gold(chosen) - gold(rejected) in the (noisy) label's orientation and
z ~ N(0, 1) is drawn once per pair from a fixed seed. sigma is found by bisection so that the sign of R
agrees with the true preference (the sign of gap) on a `target` share of the untied pairs:

- with z fixed, each pair's agreement flips once, at sigma = |gap| / |z| when z points against gap,
  so the share agreeing falls step by step as sigma grows and bisection lands within one pair of
  the target (steps of 1/n);
- target 1.0 is the gold gap itself (sigma = 0);
- target 0.5 is a scorer with no information: |R| = s * |z| (s: the spread of the gaps) and the sign
  agrees with the gap on a random half of the untied pairs, chosen without looking at the gaps' sizes
  (bisection could not reach 0.5: as sigma grows the share tends to the fraction of z that happen to agree).
"""

from __future__ import annotations

import random
import statistics


def agreement(gaps: list[float], r: list[float]) -> float:
    """Share of untied pairs (gap != 0) where R > 0 exactly when gap > 0 (the scorer's accuracy on the true order)."""
    pairs = [(g, x) for g, x in zip(gaps, r) if g != 0]
    if not pairs:
        raise ValueError("every gold gap is 0: no true preference to agree with")
    return sum((x > 0) == (g > 0) for g, x in pairs) / len(pairs)


def sign_agreement(gaps: list[float], noise: list[float], sigma: float) -> float:
    """`agreement` of R = gap + sigma * z."""
    return agreement(gaps, [g + sigma * z for g, z in zip(gaps, noise)])


def oracle_diffs(gaps: list[float], target: float, seed: int, iters: int = 60) -> tuple[list[float], dict]:
    """R for each pair and {"sigma", "target", "agreement" (achieved), "informative"} for `target` in [0.5, 1]."""
    if not 0.5 <= target <= 1.0:
        raise ValueError(f"target sign agreement {target} must be in [0.5, 1] (0.5 = no information, 1 = the gold gap)")
    rng = random.Random(seed)
    z = [rng.gauss(0.0, 1.0) for _ in gaps]
    if target == 1.0:
        sigma = 0.0
    elif target == 0.5:
        scale = statistics.pstdev(gaps) or 1.0
        untied = [i for i, g in enumerate(gaps) if g != 0]
        rng.shuffle(untied)
        agree = set(untied[: len(untied) // 2])
        r = [scale * abs(zi) * ((1 if g > 0 else -1) if i in agree else (-1 if g > 0 else 1)) if g != 0 else scale * zi
             for i, (g, zi) in enumerate(zip(gaps, z))]
        return r, {"sigma": None, "scale": scale, "target": target, "agreement": agreement(gaps, r), "informative": False}
    else:
        lo, hi = 0.0, max(abs(g) for g in gaps) or 1.0
        while sign_agreement(gaps, z, hi) > target and hi < 1e6:
            hi *= 2
        for _ in range(iters):  # invariant: agreement(lo) > target >= agreement(hi)
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if sign_agreement(gaps, z, mid) > target else (lo, mid)
        # the step closer to the target of the two either side of the crossing
        sigma = min((lo, hi), key=lambda s: abs(sign_agreement(gaps, z, s) - target))
    r = [g + sigma * zi for g, zi in zip(gaps, z)]
    return r, {"sigma": sigma, "target": target, "agreement": sign_agreement(gaps, z, sigma), "informative": True}
