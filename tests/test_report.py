"""`rdo report`: every plot is embedded in the HTML and saved as a PNG; absent inputs are notes; the page renders."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import run_align, synthetic_pairs, write_jsonl


def rates(win, tie):
    return {k: {"n": 100, "rate": r, "ci95": [max(0.0, r - 0.05), min(1.0, r + 0.05)]}
            for k, r in (("win", win), ("tie", tie), ("loss", round(1 - win - tie, 6)))}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model) -> Path:
    """A run folder: a real tiny DPO+rc run, plus small JSON inputs in the shapes contracts.md gives."""
    run = tmp_path_factory.mktemp("report") / "run"
    scored = write_jsonl(run.parent / "scored.jsonl", synthetic_pairs(24))
    (run / "score_reward").mkdir(parents=True)
    shutil.copy(scored, run / "score_reward" / "scored.jsonl")
    run_align(tiny_model, scored, run / "align_dpo_a0.5_reward" / "model", "dpo", "--alpha", "0.5", "--max_steps", "3")
    (run / "eval_accuracy_reward").mkdir()
    (run / "eval_accuracy_reward" / "accuracy.json").write_text(json.dumps({
        "scorer": "rm", "kind": "reward", "n_pairs": 60, "accuracy": 0.65, "ci95": [0.53, 0.77], "ties": 0,
        "bins": [{"lo": 0.0, "hi": 0.2, "n": 20, "accuracy": 0.55}, {"lo": 0.2, "hi": 0.9, "n": 20, "accuracy": 0.6},
                 {"lo": 0.9, "hi": 3.0, "n": 20, "accuracy": 0.8}]}))
    (run / "eval_reward").mkdir()
    (run / "eval_reward" / "reward.json").write_text(json.dumps({
        "files": [{"name": "dpo", "path": "a.jsonl", "n": 40}, {"name": "dpo_rc", "path": "b.jsonl", "n": 40}],
        "rewards": [{"name": "dpo", "scorer": "run/train_reward/model", "n": 40, "mean": 0.21, "ci95": [0.15, 0.27]},
                    {"name": "dpo_rc", "scorer": "run/train_reward/model", "n": 40, "mean": 0.283, "ci95": [0.22, 0.33]}],
        "paired": [{"a": "dpo_rc", "b": "dpo", "scorer": "run/train_reward/model", "n": 40, "mean_diff": 0.073,
                    "ci95": [0.01, 0.12], "frac_a_higher": 0.6, "frac_b_higher": 0.375, "frac_tie": 0.025}]}))
    (run / "eval_judge_rc_vs_plain").mkdir()
    (run / "eval_judge_rc_vs_plain" / "judge.json").write_text(json.dumps({
        "a": "dpo_rc", "b": "dpo", "n": 100,
        "judges": [{"model": "judge-1", "base_url": "http://127.0.0.1:1/v1", **rates(0.417, 0.21), "position_consistency": 0.8, "calls": {"ok": 200}},
                   {"model": "judge-2", "base_url": "http://127.0.0.1:2/v1", **rates(0.45, 0.1), "position_consistency": 0.7, "calls": {"ok": 200}}],
        "majority": rates(0.43, 0.17)}))
    (run / "train_reward" / "model").mkdir(parents=True)  # a scorer's run: hundreds of steps, rdo.json beside it
    (run / "train_reward" / "model" / "rdo.json").write_text(json.dumps({"kind": "reward"}))
    (run / "train_reward" / "model" / "train_metrics.json").write_text(json.dumps({"log_history": [
        {"step": s, "loss": 0.7 - s / 1000, "rewards/accuracies": 0.5 + s / 1000} for s in range(10, 310, 10)]}))
    (run / "stages.json").write_text(json.dumps({"pipeline": "/somewhere/configs/hh_dpo.yaml", "stages": [
        {"name": "score_reward", "command": "score", "status": "done", "seconds": 12.5},
        {"name": "align_dpo_a0.5_reward", "command": "align", "status": "done", "seconds": 61.0},
        {"name": "eval_reward", "command": "eval reward", "status": "done", "seconds": 3.2}]}))
    return run


def embedded_pngs(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r"<img[^>]*src='data:image/png;base64,([^']+)'", html)]


def test_report_embeds_every_plot(run_dir, tmp_path, monkeypatch):
    import matplotlib.image

    from rdo.config import ReportConfig
    from rdo.pipeline.report import Page, report

    steps = {}  # figure name -> the largest step on its x axes
    figure = Page.figure

    def record(self, fig, name, caption):
        steps[name] = max(ax.get_xlim()[1] for ax in fig.axes)
        figure(self, fig, name, caption)

    monkeypatch.setattr(Page, "figure", record)
    out = report(ReportConfig(run_dir=str(run_dir), output_dir=str(tmp_path / "rep")))
    html = Path(out["html"]).read_text()
    pngs = embedded_pngs(html)
    names = sorted(Path(p).stem for p in out["images"])
    assert names == ["accuracy_by_confidence", "coefficients", "judge_eval_judge_rc_vs_plain", "rewards", "scorer_training_curves",
                     "stage_times", "training_curves"]
    assert len(pngs) == html.count("<img") == 7
    # the policy's 3 steps and the scorer's 300 each on their own axes
    assert steps["training_curves"] < 4 and 300 <= steps["scorer_training_curves"] < 330
    # the title names the pipeline file stages.json records, not the run folder ("rdo run run")
    assert "<h1>rdo run hh_dpo.yaml</h1>" in html
    for png, path in zip(pngs, out["images"]):
        assert png == Path(path).read_bytes()  # the saved PNG is the embedded one
        img = matplotlib.image.imread(io.BytesIO(png), format="png")
        assert img.shape[0] > 150 and img.shape[1] > 300 and img[..., :3].std() > 0.05  # a real drawing, not a blank
    # the numbers come from the inputs: the paired difference, a judge's tie rate, the align run's clipped share
    metrics = json.loads((run_dir / "align_dpo_a0.5_reward" / "model" / "train_metrics.json").read_text())
    clipped = metrics["data"]["coefficients"]["frac_raised_to_floor"]
    assert "0.073" in html and "[0.010, 0.120]" in html and "0.210" in html and f"{clipped:.3f}" in html
    md = Path(out["markdown"]).read_text()
    assert md.count("![") == 7 and "| judge-2 |" in md and "| align_dpo_a0.5_reward | 0.50 | clip |" in md
    assert "| train_reward | scorer | 30 | 0.400 | - | 0.800 |" in md and "| align_dpo_a0.5_reward | policy | 3 |" in md


def test_absent_inputs_are_notes(tmp_path):
    from rdo.config import ReportConfig
    from rdo.pipeline.report import report

    (tmp_path / "run" / "something").mkdir(parents=True)
    out = report(ReportConfig(run_dir=str(tmp_path / "run")))
    html = Path(out["html"]).read_text()
    assert out["images"] == [] and "<img" not in html
    assert html.count("class='note'") == 6 and "No judge.json (rdo eval judge)" in html


@pytest.mark.skipif(shutil.which("chromium") is None, reason="headless Chromium (Debian package chromium) is not installed")
def test_rendered_page_screenshot(run_dir, tmp_path):
    import matplotlib.image
    import numpy as np

    from rdo.config import ReportConfig
    from rdo.pipeline.report import report

    out = report(ReportConfig(run_dir=str(run_dir), output_dir=str(tmp_path / "rep")))
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}", "--window-size=1200,8000",
                    Path(out["html"]).resolve().as_uri()], check=True, capture_output=True, timeout=120)
    img = matplotlib.image.imread(shot)
    assert img.shape[:2] == (8000, 1200)  # the whole page, whatever its length
    rgb = img[..., :3]
    assert rgb.std() > 0.1  # plots and tables, not a blank page

    def rows_with(color: str):  # screenshot rows holding pixels of this colour (bar interiors keep it exactly)
        target = np.array([int(color[i : i + 2], 16) for i in (1, 3, 5)]) / 255
        return np.nonzero((np.abs(rgb - target) < 0.02).all(-1).any(1))[0]

    # the judge's loss bars (#e76f51, drawn nowhere else) were rendered, and below them the stage-time bars (#457b9d)
    judge, blue = rows_with("#e76f51"), rows_with("#457b9d")
    assert len(judge) > 0 and blue.max() > judge.max()
