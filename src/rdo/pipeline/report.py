"""`rdo report RUN_DIR`: one self-contained HTML page (PNG plots embedded as base64) and a Markdown twin.

It reads what the commands of a run folder wrote (contracts: train_metrics.json, scored JSONL,
eval accuracy JSON, reward.json, judge.json, stages.json), finding them by file name in each stage
folder, so a folder assembled by hand works too. A section whose input is absent is left out with a
note saying what would fill it; nothing absent is an error.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
from pathlib import Path

from rdo.utils import atomic
from rdo.config import ReportConfig

log = logging.getLogger("rdo.pipeline.report")

CURVES = (("loss", "loss (weighted)"), ("rewards/margins", "reward margin"), ("rewards/accuracies", "reward accuracy"), ("weights/mean", "mean weight"))


def _json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def stage_folders(run_dir: Path) -> list[Path]:
    """Stage folders in run order (stages.json), then any other sub-folders by name."""
    order = [s["name"] for s in (_json(run_dir / "stages.json") or {}).get("stages", [])]
    folders = [run_dir / n for n in order if (run_dir / n).is_dir()]
    return folders + sorted(p for p in run_dir.iterdir() if p.is_dir() and p not in folders and p.name != "report")


def find(folder: Path, name: str) -> Path | None:
    for p in (folder / name, folder / "model" / name):
        if p.is_file():
            return p
    return None


class Page:
    """Sections in order; each is Markdown text, and HTML with embedded images."""

    def __init__(self, out: Path):
        self.out, self.md, self.html, self.images = out, [], [], []

    def heading(self, text: str):
        self.md.append(f"\n## {text}\n")
        self.html.append(f"<h2>{html.escape(text)}</h2>")

    def note(self, text: str):
        self.md.append(f"_{text}_\n")
        self.html.append(f"<p class='note'>{html.escape(text)}</p>")

    def table(self, header: list[str], rows: list[list]):
        self.md.append("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
        self.md += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
        self.md.append("")
        cells = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
        self.html.append(f"<table><tr>{cells}</tr>{body}</table>")

    def figure(self, fig, name: str, caption: str):
        """Save the figure as name.png next to the page and embed the same bytes."""
        import matplotlib.pyplot as plt

        path = self.out / f"{name}.png"
        with atomic.atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        data = base64.b64encode(path.read_bytes()).decode()
        self.images.append(path)
        self.md.append(f"![{caption}]({path.name})\n")
        self.html.append(f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'><figcaption>{html.escape(caption)}</figcaption></figure>")


def _fmt(v, digits=3):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _ci(ci) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "-"


# --- sections ---------------------------------------------------------------------------------------

SCORER_CURVES = (("loss", "loss"), ("rewards/accuracies", "reward model: batch accuracy"), ("diff/accuracies", "difference model: batch accuracy"))


def training_section(page: Page, runs: dict[str, dict], scorers: set[str], plt):
    """Policy training (align) and scorer training (train-rm / train-diff) in separate figures: a scorer
    trains for hundreds of steps, a policy for tens, and one shared step axis flattens the policy's curves."""
    page.heading("Training curves")
    if not runs:
        return page.note("No training runs (train_metrics.json with a log_history) in this folder.")
    for kind, curves, name, members in (
            ("policy", CURVES, "training_curves", {n: m for n, m in runs.items() if n not in scorers}),
            ("scorer", SCORER_CURVES, "scorer_training_curves", {n: m for n, m in runs.items() if n in scorers})):
        present = [(k, label) for k, label in curves if any(k in e for m in members.values() for e in m.get("log_history", []))]
        if not present:
            continue
        fig, axes = plt.subplots(1, len(present), figsize=(4.2 * len(present), 3.2), squeeze=False)
        for ax, (key, label) in zip(axes[0], present):
            for run, m in members.items():
                pts = [(e["step"], e[key]) for e in m.get("log_history", []) if key in e and "step" in e]
                if pts:
                    ax.plot(*zip(*pts), marker="o", ms=3, label=run)
            ax.set_title(label)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=7)
        page.figure(fig, name, f"{kind.capitalize()} training curves per run: " + ", ".join(label for _, label in present))
    rows = []
    for name, m in runs.items():
        steps = [e for e in m.get("log_history", []) if "loss" in e]
        last = steps[-1] if steps else {}
        rows.append([name, "scorer" if name in scorers else "policy", len(steps), _fmt(last.get("loss")),
                     _fmt(last.get("rewards/margins")), _fmt(last.get("rewards/accuracies", last.get("diff/accuracies")))])
    page.table(["run", "trains", "logged steps", "last loss", "last margin", "last accuracy"], rows)


def coefficient_section(page: Page, scored: dict[str, list[float]], coef_stats: dict[str, dict], plt):
    page.heading("Reward difference coefficients")
    if not scored and not coef_stats:
        return page.note("No scored data (rdo_reward_diff) and no align run with coefficient statistics.")
    if scored:  # one panel per scorer: their scales differ
        fig, axes = plt.subplots(1, len(scored), figsize=(4.6 * len(scored), 3.2), squeeze=False)
        for ax, (name, values) in zip(axes[0], scored.items()):
            users = [st for st in coef_stats.values() if st.get("policy", {}).get("alpha")]
            ax.hist(values, bins=30, color="#457b9d")
            ax.axvline(0, color="k", lw=1)
            for f in sorted({st["policy"]["floor"] for st in users}):
                ax.axvline(f, color="#e63946", ls="--", lw=1)
            nonpos = sum(v <= 0 for v in values) / len(values)
            ax.set_title(f"{name}: n={len(values)}, {nonpos:.0%} with R <= 0", fontsize=9)
            ax.set_xlabel("R (rdo_reward_diff); dashed: the floor")
            ax.set_ylabel("pairs")
        page.figure(fig, "coefficients", "Histogram of R per scorer; R <= 0 is raised to the floor (clip), dropped or mirrored, as each align run below says")
    rows = []
    for name, s in coef_stats.items():
        p, w = s.get("policy", {}), s.get("weight") or {}
        rows.append([name, _fmt(p.get("alpha"), 2), p.get("nonpositive", "-"), _fmt(s.get("frac_nonpositive")),
                     _fmt(s.get("frac_raised_to_floor")), _fmt(s.get("frac_dropped")), _fmt(w.get("q00")), _fmt(w.get("q100"))])
    if rows:
        page.table(["align run", "α", "R <= 0", "frac R <= 0", "frac clipped to floor", "frac dropped", "min weight", "max weight"], rows)


def accuracy_section(page: Page, accs: dict[str, dict], plt):
    page.heading("Scorer accuracy")
    if not accs:
        return page.note("No eval accuracy JSON (rdo eval accuracy --output) in this folder.")
    page.table(["scorer", "kind", "pairs", "accuracy", "95% CI", "position consistency"],
               [[n, a.get("kind", "-"), a.get("n_pairs"), _fmt(a.get("accuracy")), _ci(a.get("ci95")), _fmt(a.get("position_consistency"))] for n, a in accs.items()])
    fig, axes = plt.subplots(1, len(accs), figsize=(4.6 * len(accs), 3.2), squeeze=False)
    for ax, (name, a) in zip(axes[0], accs.items()):  # one panel per scorer: each has its own |R| bins
        bins = [b for b in a.get("bins", []) if b.get("accuracy") is not None]
        ax.bar(range(len(bins)), [b["accuracy"] for b in bins], color="#2a9d8f")
        ax.set_xticks(range(len(bins)), [f"{b['lo']:.2g}-{b['hi']:.2g}\nn={b['n']}" for b in bins], fontsize=7)
        ax.axhline(0.5, color="grey", ls=":", lw=1)
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{name}: {_fmt(a.get('accuracy'))} overall", fontsize=9)
        ax.set_xlabel("|R| bin (low to high confidence)")
        ax.set_ylabel("accuracy")
    page.figure(fig, "accuracy_by_confidence", "Accuracy by confidence |R| (the paper's Table 15)")


def reward_section(page: Page, rewards: dict | None, plt):
    page.heading("Rewards of generated responses")
    if not rewards:
        return page.note("No reward.json (rdo eval reward) in this folder.")
    rows = rewards.get("rewards", [])
    page.table(["generations", "scorer", "n", "mean", "95% CI"], [[r["name"], r["scorer"], r["n"], _fmt(r["mean"]), _ci(r.get("ci95"))] for r in rows])
    scorers = list(dict.fromkeys(r["scorer"] for r in rows))
    fig, axes = plt.subplots(1, len(scorers), figsize=(5 * len(scorers), 3.4), squeeze=False)
    for ax, sc in zip(axes[0], scorers):
        rs = [r for r in rows if r["scorer"] == sc]
        lo = [r["mean"] - r["ci95"][0] if r.get("ci95") else 0 for r in rs]
        hi = [r["ci95"][1] - r["mean"] if r.get("ci95") else 0 for r in rs]
        ax.errorbar(range(len(rs)), [r["mean"] for r in rs], yerr=[lo, hi], fmt="o", capsize=4)
        ax.set_xticks(range(len(rs)), [r["name"] for r in rs], rotation=30, ha="right", fontsize=7)
        ax.set_title("/".join(Path(sc).parts[-2:]) if "/" in sc else sc, fontsize=9)
        ax.set_ylabel("mean reward (95% CI)")
        ax.grid(axis="y", alpha=0.3)
    page.figure(fig, "rewards", "Mean reward per generations file with bootstrap 95% intervals")
    paired = rewards.get("paired", [])
    if paired:
        page.table(["A", "B", "scorer", "n", "mean A - B", "95% CI", "MDE", "A higher", "B higher", "tie"],
                   [[p["a"], p["b"], p["scorer"], p["n"], _fmt(p["mean_diff"]), _ci(p.get("ci95")), _fmt(p.get("mde")),
                     _fmt(p["frac_a_higher"]), _fmt(p["frac_b_higher"]), _fmt(p["frac_tie"])] for p in paired])


def judge_section(page: Page, judges: dict[str, dict], plt):
    page.heading("LLM-as-judge: win / tie / loss")
    if not judges:
        return page.note("No judge.json (rdo eval judge) in this folder.")
    for stage, j in judges.items():
        bars = [(f"{x['model']}", x) for x in j.get("judges", [])] + ([("majority", j["majority"])] if j.get("majority") else [])
        page.table(["judge", f"win ({j.get('a')})", "tie", f"loss ({j.get('b')} wins)", "position consistency"],
                   [[n, f"{x['win']['rate']:.3f} {_ci(x['win'].get('ci95'))}", f"{x['tie']['rate']:.3f}", f"{x['loss']['rate']:.3f}",
                     _fmt(x.get("position_consistency"))] for n, x in bars])
        fig, ax = plt.subplots(figsize=(7, 0.6 * len(bars) + 1.2))
        left = [0.0] * len(bars)
        for outcome, color in (("win", "#2a9d8f"), ("tie", "#bbbbbb"), ("loss", "#e76f51")):
            vals = [x[outcome]["rate"] for _, x in bars]
            ax.barh([n for n, _ in bars], vals, left=left, color=color, label=outcome)
            for i, v in enumerate(vals):
                if v > 0.06:
                    ax.text(left[i] + v / 2, i, f"{v:.0%}", ha="center", va="center", fontsize=8)
            left = [a + b for a, b in zip(left, vals)]
        ax.set_xlim(0, 1)
        ax.invert_yaxis()
        ax.legend(ncol=3, fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0))
        ax.set_xlabel(f"share of {j.get('n', '?')} examples (win = {j.get('a')} better)")
        page.figure(fig, f"judge_{stage}", f"{stage}: {j.get('a')} vs {j.get('b')}, per judge and majority")


def time_section(page: Page, stages: list[dict], plt):
    page.heading("Time per stage")
    timed = [s for s in stages if s.get("seconds") is not None]
    if not timed:
        return page.note("No stages.json with stage times (written by rdo run).")
    page.table(["stage", "command", "status now", "seconds (last run)"], [[s["name"], s.get("command", "-"), s.get("status", "-"), f"{s['seconds']:.1f}"] for s in timed])
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(timed) + 1))
    ax.barh([s["name"] for s in timed], [s["seconds"] for s in timed], color="#457b9d")
    ax.invert_yaxis()
    ax.set_xlabel("seconds (last run of each stage)")
    ax.tick_params(axis="y", labelsize=7)
    page.figure(fig, "stage_times", "Time each stage took (the paper's Table 11)")


# --- the command --------------------------------------------------------------------------------------

def collect(run_dir: Path) -> dict:
    from rdo.score.scorers import SPEC_FILE

    found = {"runs": {}, "scorers": set(), "coef_stats": {}, "scored": {}, "accuracy": {}, "reward": None, "judges": {}}
    for folder in stage_folders(run_dir):
        name = folder.name
        if (p := find(folder, "train_metrics.json")) and (m := _json(p)) and "log_history" in m:
            found["runs"][name] = m
            if (p.parent / SPEC_FILE).is_file():  # rdo train-rm / train-diff save their spec beside the model
                found["scorers"].add(name)
            coef = (m.get("data") or {}).get("coefficients")
            if coef and coef.get("reward_diff") is not None:
                found["coef_stats"][name] = coef
        if (p := find(folder, "accuracy.json")) and (a := _json(p)):
            found["accuracy"][name] = a
        if (p := find(folder, "reward.json")) and (r := _json(p)):
            found["reward"] = r
        if (p := find(folder, "judge.json")) and (j := _json(p)):
            found["judges"][name] = j
        if (p := find(folder, "scored.jsonl")):
            values = []
            for line in p.read_text(encoding="utf-8").splitlines():
                r = json.loads(line).get("rdo_reward_diff") if line.strip() else None
                if isinstance(r, (int, float)):
                    values.append(float(r))
                elif isinstance(r, list):  # ranked rows: R of every used ordered pair (i, j)
                    values += [float(v) for row in r for v in row if isinstance(v, (int, float)) and v != 0]
            if values:
                found["scored"][name] = values
    record = _json(run_dir / "stages.json") or {}
    found["stages"], found["pipeline"] = record.get("stages", []), record.get("pipeline")
    return found


CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f2f2f2}img{max-width:100%}figure{margin:.5em 0 1.5em}
figcaption{font-size:12px;color:#555}.note{color:#777;font-style:italic}"""


def report(cfg: ReportConfig) -> dict:
    """Write report.html, report.md and the PNGs; returns {"html", "markdown", "images"}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    run_dir = Path(cfg.run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{cfg.run_dir}: no such run folder")
    out = Path(cfg.output_dir) if cfg.output_dir else run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    found = collect(run_dir)
    # the pipeline file names the experiment (run folders are often just `run`); by hand, the folder does
    title = cfg.title or f"rdo run {Path(found['pipeline']).name if found['pipeline'] else run_dir.resolve().name}"
    page = Page(out)
    training_section(page, found["runs"], found["scorers"], plt)
    coefficient_section(page, found["scored"], found["coef_stats"], plt)
    accuracy_section(page, found["accuracy"], plt)
    reward_section(page, found["reward"], plt)
    judge_section(page, found["judges"], plt)
    time_section(page, found["stages"], plt)
    doc = f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>{''.join(page.html)}</body></html>"
    atomic.write_text(out / "report.html", doc)
    atomic.write_text(out / "report.md", f"# {title}\n" + "\n".join(page.md) + "\n")
    log.info("wrote %s, %s and %d plot(s)", out / "report.html", out / "report.md", len(page.images))
    return {"html": str(out / "report.html"), "markdown": str(out / "report.md"), "images": [str(p) for p in page.images]}
