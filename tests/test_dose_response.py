"""The dose-response study's reusable parts: the oracle's calibration, the stage keying, the MDE and the
two-way bootstrap (experiments/dose_response.py itself is run by hand, not in CI)."""

import importlib.util
import random
import sys
from pathlib import Path

import pytest

from rdo.demo.oracle import agreement, oracle_diffs
from rdo.evaluate.stats import min_detectable_effect, two_way_bootstrap

ROOT = Path(__file__).resolve().parents[1]


def _study_module():
    spec = importlib.util.spec_from_file_location("dose_response", ROOT / "experiments" / "dose_response.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["dose_response"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("target", [0.5, 0.6, 0.7, 0.85, 1.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_oracle_reaches_the_target_sign_agreement(target, seed):
    rng = random.Random(100 + seed)  # gaps drawn apart from the oracle's own noise
    gaps = [rng.gauss(0.0, 0.5) for _ in range(200)] + [0.0] * 5  # gold ties are left out of the agreement
    r, info = oracle_diffs(gaps, target, seed=seed)
    achieved = agreement(gaps, r)
    assert abs(achieved - target) <= 0.03, (target, achieved)
    assert info["agreement"] == pytest.approx(achieved)
    if target == 1.0:
        assert r == gaps  # the gold gap itself
    if 0.5 < target < 1.0:  # R keeps the gap's signal: larger gaps agree more often than small ones
        big = [i for i, g in enumerate(gaps) if abs(g) > 0.5]
        small = [i for i, g in enumerate(gaps) if 0 < abs(g) < 0.1]
        agree = lambda idx: sum((r[i] > 0) == (gaps[i] > 0) for i in idx) / len(idx)  # noqa: E731
        assert agree(big) > agree(small)


def test_oracle_noise_is_shared_across_targets_and_refuses_out_of_range():
    rng = random.Random(7)
    gaps = [rng.gauss(0.0, 0.5) for _ in range(100)]
    _, a = oracle_diffs(gaps, 0.7, seed=3)
    _, b = oracle_diffs(gaps, 0.85, seed=3)
    assert a["sigma"] > b["sigma"] > 0  # less accurate = more noise on the same draw
    with pytest.raises(ValueError, match="0.5, 1"):
        oracle_diffs(gaps, 0.4, seed=0)


def test_stage_reruns_on_a_changed_setting_and_skips_an_unchanged_one(tmp_path):
    dr = _study_module()
    calls = []

    def fn():
        calls.append(1)
        return {"n": len(calls)}

    out = tmp_path / "s.json"
    assert dr.stage(out, {"lr": 1e-4}, fn) == {"n": 1}
    assert dr.stage(out, {"lr": 1e-4}, fn) == {"n": 1}  # same key: read back, not rerun
    assert len(calls) == 1
    assert dr.stage(out, {"lr": 3e-4}, fn) == {"n": 2}  # a changed setting reruns
    assert dr.stage(out, {"lr": 3e-4}, fn, outputs=(tmp_path / "missing.jsonl",)) == {"n": 3}  # a missing output reruns
    assert len(calls) == 3


def test_roles_keep_subjects_apart():
    dr = _study_module()
    from rdo.demo.task import prompt_table

    rows = prompt_table()
    role = dr.roles(rows)
    by_subject = {}
    for r in rows:
        by_subject.setdefault(r["subject"], set()).add(role[r["id"]])
    assert all(len(v) == 1 for v in by_subject.values())
    counts = {k: sum(v == k for v in role.values()) for k in ("train", "valid", "heldout")}
    assert counts == {"train": 64, "valid": 32, "heldout": 160}
    assert all(role[r["id"]] == "heldout" for r in rows if r["split"] == "test")  # the demo's held-out prompts stay held out


def test_expected_gold_is_the_softmax_average():
    dr = _study_module()
    # log-probs -1 and -1 - ln 3: probabilities 3/4 and 1/4
    import math

    assert dr.expected_gold([-1.0, -1.0 - math.log(3)], [1.0, -1.0]) == pytest.approx(0.5)


def test_mde_is_2_8_standard_errors():
    assert min_detectable_effect(1.0) == pytest.approx(2.8016, abs=1e-3)
    assert min_detectable_effect(0.05, power=0.5) == pytest.approx(1.96 * 0.05, abs=1e-3)


def test_two_way_bootstrap_widens_with_seed_spread():
    rng = random.Random(0)
    noise = [[rng.gauss(0, 1) for _ in range(60)] for _ in range(5)]
    same = two_way_bootstrap(noise, 1000, 0)
    shifted = two_way_bootstrap([[x + off for x in row] for row, off in zip(noise, (-2, -1, 0, 1, 2))], 1000, 0)
    assert same["mean"] == pytest.approx(sum(map(sum, noise)) / 300)
    assert shifted["se"] > 2 * same["se"]  # seed-to-seed spread counts, not only prompt-to-prompt
    assert same["ci95"][0] < same["mean"] < same["ci95"][1]
