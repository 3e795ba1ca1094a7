"""The dose-response study's other uses of R (`--methods odpo mmpo rpo`): which policies are trained, their stage
keys (DPO and DPO+rc keep theirs), each training's own loss on the study's engine (tiny model), and the
table / figure rows from a made-up result."""

from __future__ import annotations

import math

import pytest

from conftest import synthetic_pairs, write_jsonl
from test_dose_response import _study_module


@pytest.fixture(scope="module")
def dr():
    return _study_module()


def test_default_policies_are_the_study_as_first_run(dr):
    study = dr.Study()
    old = [("dpo", None, 0.0)] + [(f"rc-acc{a}-alpha{al}", a, al) for a in study.accuracies for al in study.alphas]
    assert [(p.name, p.accuracy, p.alpha) for p in dr.policies(study)] == old
    assert {p.method for p in dr.policies(study)} == {"dpo"}


def test_every_method_trains_at_every_accuracy_at_alpha_0(dr):
    study = dr.Study(methods=("rpo", "dpo_rc", "odpo", "mmpo"), accuracies=(0.85, 1.0))
    got = [(p.name, p.accuracy, p.alpha, p.method, p.kind) for p in dr.policies(study)]
    assert got == [  # accuracy by accuracy, in a fixed order whatever the order of --methods
        ("dpo", None, 0.0, "dpo", "dpo"),
        ("rc-acc0.85-alpha0.5", 0.85, 0.5, "dpo", "dpo_rc"), ("rc-acc0.85-alpha1.0", 0.85, 1.0, "dpo", "dpo_rc"),
        ("odpo-acc0.85", 0.85, 0.0, "odpo", "odpo"), ("mmpo-acc0.85", 0.85, 0.0, "mmpo", "mmpo"), ("rpo-acc0.85", 0.85, 0.0, "rpo", "rpo"),
        ("rc-acc1.0-alpha0.5", 1.0, 0.5, "dpo", "dpo_rc"), ("rc-acc1.0-alpha1.0", 1.0, 1.0, "dpo", "dpo_rc"),
        ("odpo-acc1.0", 1.0, 0.0, "odpo", "odpo"), ("mmpo-acc1.0", 1.0, 0.0, "mmpo", "mmpo"), ("rpo-acc1.0", 1.0, 0.0, "rpo", "rpo"),
    ]
    assert [p.name for p in dr.policies(dr.Study(methods=("mmpo",), accuracies=(0.85,)))] == ["dpo", "mmpo-acc0.85"]


def test_study_refuses_an_unknown_method_or_a_tuning_accuracy_it_does_not_train(dr):
    with pytest.raises(ValueError, match="choose one or more of dpo_rc odpo mmpo rpo"):
        dr.Study(methods=("kto",))
    with pytest.raises(ValueError, match="tune_accuracy 0.85"):
        dr.Study(methods=("odpo",), accuracies=(0.5, 1.0))
    dr.Study(methods=("dpo_rc",), accuracies=(0.5, 1.0))  # dpo_rc tunes nothing


def test_method_options_and_candidates(dr):
    study = dr.Study(mmpo_gammas=(2.0, 20.0))
    assert dr.method_options(study, "odpo", 3.0) == {"odpo_offset_scale": 3.0}
    assert dr.method_options(study, "mmpo", 10.0) == {"mmpo_gamma": 10.0}
    assert dr.method_options(study, "rpo", 1.0) == {"rpo_eta": 1.0, "rpo_variant": "sq"}  # not bwd_kl: MMPO's gradients
    assert dr.candidates(study, "mmpo") == (2.0, 20.0)
    assert dr.candidates(study, "odpo") == (1.0, 3.0, 10.0)


def test_dpo_and_rc_run_keys_are_unchanged_and_a_method_key_holds_its_options(dr):
    study = dr.Study()
    common = {"model": "m", "vocab": "v", "eval": {"valid": "a", "heldout": "b"}, "top_layers": 1, "beta": 0.1, "batch": 8,
              "lengths": [112, 64], "bf16": True}
    # the key as the study built it before other methods joined: the finished DPO / DPO+rc runs stay valid
    before = {"stage": "run", **common, "data": "d", "alpha": 0.5, "lr": 3e-4, "epochs": 3, "eval_at": (1, 3), "seed": 0, "which": ["heldout"]}
    key = dr.run_key(common, "d", study, seed=0, alpha=0.5, lr=3e-4, which=("heldout",))
    assert key == before and dr.digest_of(key) == dr.digest_of(before)
    odpo = lambda s: dr.run_key(common, "d", study, seed=0, alpha=0.0, lr=3e-4, which=("valid",), method="odpo",  # noqa: E731
                                options={"odpo_offset_scale": s})
    assert odpo(3.0)["method"] == "odpo" and odpo(3.0)["options"] == {"odpo_offset_scale": 3.0}
    assert len({dr.digest_of(k) for k in (odpo(1.0), odpo(3.0), dr.run_key(common, "d", study, seed=0, alpha=0.0, lr=3e-4, which=("valid",)))}) == 3


def test_shared_results_are_read_back_only_under_their_key(dr, tmp_path):
    path = tmp_path / "r.json"
    dr.stage(path, {"method": "odpo", "s": 1.0}, lambda: {"value": 1})
    assert dr.finished(path, {"method": "odpo", "s": 1.0}) == {"value": 1}
    assert dr.finished(path, {"method": "odpo", "s": 3.0}) is None  # another value's run: not this one's result
    assert dr.finished(tmp_path / "missing.json", {}) is None


def _row(method, acc, alpha, options, mean):
    return {"method": method, "accuracy": acc, "alpha": alpha, "options": options, "achieved": acc,
            "mean": 0.35 + mean, "minus_dpo": {"mean": mean, "ci95": [mean - 0.01, mean + 0.01], "se": 0.005, "mde": 0.014}}


def _result():
    cells = []
    for tau in (0.1, 0.3):
        for regime, epochs in (("light", 1), ("strong", 3)):
            rows = []
            for acc in (0.5, 1.0):
                rows += [_row("dpo_rc", acc, 0.5, None, 0.01), _row("dpo_rc", acc, 1.0, None, 0.02),
                         _row("odpo", acc, 0.0, {"odpo_offset_scale": 3.0}, 0.003), _row("mmpo", acc, 0.0, {"mmpo_gamma": 10.0}, -0.004),
                         _row("rpo", acc, 0.0, {"rpo_eta": 1.0, "rpo_variant": "sq"}, 0.005)]
            cells.append({"tau": tau, "regime": regime, "epochs": epochs, "lr": 3e-4, "seeds": [0, 1], "prompts": 160, "wrong": 0.2,
                          "base": 0.33, "dpo": 0.35, "dpo_minus_base": {"mean": 0.02, "ci95": [0.0, 0.04], "se": 0.01, "mde": 0.028},
                          "policies": rows})
    return {"cells": cells}


def test_table_has_a_row_per_policy_and_accuracy(dr):
    text = dr.table(_result(), "header")
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == 4 * 2 * 5  # (tau, regime) cells x accuracies x policies
    assert "| policy | policy − DPO, 95% CI | MDE |" in text
    assert "| 1.0 (1.000) | ODPO s = 3 | +0.003 [-0.007, +0.013] | 0.014 |" in text
    assert "| 0.5 (0.500) | MMPO γ = 10 | -0.004 [-0.014, +0.006] | 0.014 |" in text
    assert "| 0.5 (0.500) | RPO (sq) η = 1 |" in text and "| 0.5 (0.500) | DPO+rc α = 1.0 |" in text


def test_figure_draws_one_line_per_policy_and_noise_level(dr, tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = _result()
    assert dr.series(res) == [("dpo_rc", 0.5), ("dpo_rc", 1.0), ("odpo", 0.0), ("mmpo", 0.0), ("rpo", 0.0)]
    saved = []
    monkeypatch.setattr(plt.Figure, "savefig", lambda fig, path, **kw: saved.append(fig))
    dr.figure(res, tmp_path / "f.png", "title")
    (fig,) = saved
    for ax in fig.axes:  # light and strong: 5 policies x 2 noise levels, each labelled by its policy
        labels = [c.get_label() for c in ax.containers]
        assert len(labels) == 10
        assert "ODPO s = 3, τ = 0.3 (20% wrong)" in labels and "DPO+rc α = 0.5, τ = 0.1 (20% wrong)" in labels
    rc, odpo = (next(line for line in fig.axes[0].lines if line.get_marker() == m) for m in ("s", "^"))
    assert rc.get_markerfacecolor() == rc.get_color() and odpo.get_markerfacecolor() == "white"  # open markers: R in the loss


def test_tuning_note_names_each_chosen_value_and_the_values_tried(dr):
    tuned = {"tau": 0.3, "seed": 100, "accuracy": 0.85, "lr": 3e-4, "epochs": 3,
             "search": {"odpo": {"option": "odpo_offset_scale", "chosen": 3.0,
                                 "valid_minus_base": {"1": {"1 epoch(s)": 0.0, "3 epoch(s)": 0.01}, "3": {"1 epoch(s)": 0.0, "3 epoch(s)": 0.02}}}}}
    note = dr.tuning_note(tuned)
    assert note.startswith("Chosen on the validation prompts only (τ = 0.3, labels of seed 100, oracle accuracy 0.85, lr 0.0003)")
    assert "ODPO s = 3 (validation − base after 3 epoch(s), per value: 1: +0.010, 3: +0.020)" in note


def test_engine_trains_each_policy_with_its_own_loss(dr, tiny_model, tmp_path):
    """On the study's engine (top block on replayed states, reduced vocabulary): ODPO with s = 0 is DPO exactly
    (same pairs, order, reference and seed), other settings move the policy elsewhere, and each run logs its loss's metric."""
    data = write_jsonl(tmp_path / "pairs.jsonl", synthetic_pairs(16, seed=1))
    study = dr.Study(bf16=False, batch_size=4, epochs=(1, 2))
    engine = dr.Engine(study, str(tiny_model), tmp_path / "out", data)
    eval_cfg = engine.config(data, tmp_path / "scratch", alpha=0.0, lr=1e-5, epochs=1, seed=0)
    eval_feats, _ = engine.features(eval_cfg, weighted=False)

    def train(method="dpo", options=None):
        cfg = engine.config(data, tmp_path / "scratch", alpha=0.0, lr=3e-3, epochs=2, seed=0, method=method, options=options)
        return engine.train(cfg, study.epochs, lambda: engine.logps(eval_feats, eval_cfg))

    dpo = train()
    assert "odpo/offset" not in dpo["last_log"] and "mmpo/label" not in dpo["last_log"]
    assert train("odpo", {"odpo_offset_scale": 0.0})["evals"] == dpo["evals"]
    runs = {m: train(m, dr.method_options(study, m, 3.0)) for m in ("odpo", "mmpo", "rpo")}
    for m, metric in (("odpo", "odpo/offset"), ("mmpo", "mmpo/label"), ("rpo", None)):
        assert runs[m]["evals"][2] != dpo["evals"][2], m
        assert all(math.isfinite(c) and math.isfinite(r) for c, r in runs[m]["evals"][2])
        if metric:
            assert metric in runs[m]["last_log"]
    assert runs["mmpo"]["evals"][2] != runs["rpo"]["evals"][2]  # rpo is sq, not bwd_kl (MMPO's gradients)
