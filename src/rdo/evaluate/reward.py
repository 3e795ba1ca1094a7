"""`rdo eval reward`: how much reward the responses in generations files earn (the paper's Table 1).

For every generations file (written by `rdo generate`) and every reward source, the mean reward
with a bootstrap 95% interval; for every two files, a paired comparison on the same rows (matched
by (id or rdo_row, prompt, sample_index)): the mean difference A - B with a paired bootstrap
interval, its minimum detectable effect (MDE: the smallest true difference the interval excludes 0
for with 80% power) and the fractions of rows where A, or B, earns more, or both the same. Several
answers to one prompt (`--num_return_sequences`) are not independent: means and intervals are over
prompts, each the mean of its answers, and the bootstrap resamples prompts.

Reward sources:
- `--scorer DIR`: a reward model. A `rdo train-rm` folder (its rdo.json gives the lengths) or any
  AutoModelForSequenceClassification folder with one output. Each (prompt, response) is fed the
  way `rdo train-rm` feeds a pair's response: a string prompt as is, a message-list prompt and
  the response rendered with the scorer's own chat template (refused when it has none, as
  `rdo train-rm` refuses such rows); BOS/EOS and truncation by the same rule (rdo.data.tokenize).
- `--reward_fn module:function`: a Python callable f(prompt: str, response: str) -> float; a
  message-list prompt is passed as its rendered `prompt_text`.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
from itertools import combinations
from pathlib import Path

from rdo.config import EvalRewardConfig
from rdo.data.chat import has_chat_template, render_response
from rdo.evaluate.stats import bootstrap_mean, cluster_means

log = logging.getLogger("rdo.eval_reward")
REQUIRED = ("prompt", "response", "sample_index")


# --- generations files ---------------------------------------------------------------------------

def read_generations(path: str) -> list[dict]:
    """The rows of a generations file, each checked for the fields this command reads."""
    from rdo.data.io import read_rows

    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such generations file")
    rows = []
    for line, row in read_rows(path):
        if not isinstance(row, dict):
            raise ValueError(str(row))  # a DataError: file, line and what is wrong
        for f in REQUIRED:
            if f not in row:
                raise ValueError(f"{path}, row {line}, field {f!r}: missing (is this a file written by `rdo generate`?)")
        if not isinstance(row["response"], str):
            raise ValueError(f"{path}, row {line}, field 'response': expected a string, got {type(row['response']).__name__}")
        row["_line"] = line
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def row_key(row: dict) -> tuple:
    """What pairs a row of one file with a row of another: the input row, its prompt, the sample."""
    return (row.get("id", row.get("rdo_row")), json.dumps(row["prompt"], sort_keys=True, ensure_ascii=False), row["sample_index"])


def keyed(path: str, rows: list[dict]) -> dict[tuple, int]:
    out: dict[tuple, int] = {}
    for i, row in enumerate(rows):
        k = row_key(row)
        if k in out:
            raise ValueError(f"{path}, row {row['_line']}: the same (id/rdo_row, prompt, sample_index) as row {rows[out[k]]['_line']}")
        out[k] = i
    return out


# --- reward sources -------------------------------------------------------------------------------

def load_reward_fn(spec: str):
    module, name = spec.split(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"--reward_fn {spec}: cannot import it ({e})") from None
    if not callable(fn):
        raise ValueError(f"--reward_fn {spec}: {type(fn).__name__} is not callable")
    return fn


def text_prompt(row: dict) -> str:
    return row["prompt"] if isinstance(row["prompt"], str) else row.get("prompt_text") or json.dumps(row["prompt"])


def rewards_from_fn(fn, spec: str, path: str, rows: list[dict]) -> list[float]:
    out = []
    for row in rows:
        value = fn(text_prompt(row), row["response"])
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"--reward_fn {spec} returned {value!r} for {path}, row {row['_line']}; it must return a finite number")
        out.append(float(value))
    return out


def load_reward_model(cfg: EvalRewardConfig, folder: str):
    """A Scorer for a `rdo train-rm` folder, or for any 1-output sequence-classification folder."""
    from rdo.score.scorers import SPEC_FILE, Scorer, ScorerSpec, load_scorer
    from rdo.utils.distributed import device as resolve_device

    if not Path(folder).is_dir():
        raise FileNotFoundError(f"--scorer {folder}: no such folder")
    if (Path(folder) / SPEC_FILE).is_file():
        scorer = load_scorer(folder, cfg.device, cfg.torch_dtype, cfg.max_length, cfg.max_prompt_length)
        if scorer.kind != "reward":
            raise ValueError(f"--scorer {folder} is a {scorer.kind} model; eval reward needs a reward model r(x, y) (rdo train-rm)")
        return scorer
    from transformers import AutoModelForSequenceClassification

    from rdo.models import DTYPES, load_tokenizer

    model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=DTYPES[cfg.torch_dtype])
    if model.config.num_labels != 1:
        raise ValueError(f"--scorer {folder}: the model has {model.config.num_labels} outputs; a reward model has one")
    tok = load_tokenizer(folder)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    max_length = cfg.max_length or 1024
    spec = ScorerSpec("reward", max_length, cfg.max_prompt_length if cfg.max_prompt_length is not None else min(512, max_length // 2))
    dev = resolve_device(cfg.device)
    return Scorer(model.to(dev).eval(), tok, spec, dev)


def scorer_inputs(tok, row: dict, path: str = "", folder: str = "") -> tuple[str, str]:
    """(prompt, response) as `rdo train-rm` reads a pair: message lists through the scorer's chat template.

    A scorer without a chat template never saw a message list in training (`rdo train-rm` refuses them),
    and the row's `prompt_text` is the *policy's* rendering: refused rather than scored.
    """
    if isinstance(row["prompt"], str):
        return row["prompt"], row["response"]
    if not has_chat_template(tok):
        raise ValueError(f"{path}, row {row['_line']}, field 'prompt': a message list, and the reward model {folder} has no chat "
                         "template to render it as `rdo train-rm` would (it trains on message lists only through the scorer's "
                         "own template). Use a reward model with a chat template, or generate from string prompts.")
    try:
        return render_response(tok, row["prompt"], [{"role": "assistant", "content": row["response"]}])
    except ValueError as e:
        raise ValueError(f"{path}, row {row['_line']}: the reward model {folder}: {e}") from None


def rewards_from_scorer(scorer, cfg: EvalRewardConfig, path: str, rows: list[dict], bar=None, scorer_name: str = "") -> list[float]:
    from rdo.score.scoring import score_rows

    recs = []
    for row in rows:
        prompt, response = scorer_inputs(scorer.tok, row, path, scorer_name)
        recs.append({"rdo_row": row["_line"], "prompt": prompt, "responses": [response], "scores": [0.0]})
    entries = score_rows(scorer, recs, "ranked", False, set(), cfg.batch_size, bar, path)  # one response per "ranked" row
    for e in entries:
        if "skipped" in e:
            raise ValueError(e["skipped"])
    return [e["cols"]["rdo_scores"][0] for e in entries]


# --- statistics -------------------------------------------------------------------------------

def paired(name_a: str, name_b: str, scorer: str, a: list[float], b: list[float], prompts: list, cfg: EvalRewardConfig) -> dict:
    """A - B on the same rows; `prompts` names each row's prompt (the unit the bootstrap resamples)."""
    n = len(a)
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    stats = bootstrap_mean(cluster_means(diffs, prompts), cfg.bootstrap, cfg.seed)
    return {"a": name_a, "b": name_b, "scorer": scorer, "n": n, "prompts": len(set(prompts)), "mean_diff": stats["mean"],
            "ci95": stats["ci95"], "se": stats["se"], "mde": stats["mde"],
            "frac_a_higher": sum(d > 0 for d in diffs) / n, "frac_b_higher": sum(d < 0 for d in diffs) / n,
            "frac_tie": sum(d == 0 for d in diffs) / n}


def aligned(path_a: str, keys_a: dict, path_b: str, keys_b: dict) -> list[tuple[int, int]]:
    """Row index pairs (a, b) of the same (input row, prompt, sample), in A's order; both files must cover the same rows."""
    only_a = [k for k in keys_a if k not in keys_b]
    only_b = [k for k in keys_b if k not in keys_a]
    if only_a or only_b:
        first = (only_a or only_b)[0]
        raise ValueError(
            f"{path_a} and {path_b} do not hold the same prompts and samples: {len(only_a)} row(s) only in the first, "
            f"{len(only_b)} only in the second (first: id/rdo_row {first[0]!r}, sample {first[2]}). "
            "Generate both from the same data with the same --num_return_sequences.")
    return [(i, keys_b[k]) for k, i in keys_a.items()]


def fmt_ci(ci) -> str:
    return f"[{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else "-"


def fmt_mde(mde) -> str:
    return f"{mde:.4f}" if mde is not None else "-"


def table(result: dict) -> str:
    lines = ["| generations | reward | n | mean | 95% CI |", "|---|---|---|---|---|"]
    lines += [f"| {r['name']} | {r['scorer']} | {r['n']} | {r['mean']:+.4f} | {fmt_ci(r['ci95'])} |" for r in result["rewards"]]
    if result["paired"]:
        lines += ["", "| A vs B | reward | n | mean A-B | 95% CI | MDE | A higher | B higher | tie |", "|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {p['a']} vs {p['b']} | {p['scorer']} | {p['n']} | {p['mean_diff']:+.4f} | {fmt_ci(p['ci95'])} | {fmt_mde(p['mde'])} | "
                  f"{p['frac_a_higher']:.3f} | {p['frac_b_higher']:.3f} | {p['frac_tie']:.3f} |" for p in result["paired"]]
    return "\n".join(lines)


# --- the command ------------------------------------------------------------------------------

def eval_reward(cfg: EvalRewardConfig) -> dict:
    """Reward means per (file, reward source) and paired comparisons; prints the table, writes cfg.output."""
    from tqdm.auto import tqdm

    from rdo.utils import atomic

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    files = [(Path(p).stem, p, read_generations(p)) for p in cfg.generations]
    keys = {p: keyed(p, rows) for _, p, rows in files}
    pairs = {(pa, pb): aligned(pa, keys[pa], pb, keys[pb]) for (_, pa, _), (_, pb, _) in combinations(files, 2)}  # fail before any scoring

    rewards: dict[tuple[str, str], list[float]] = {}  # (file, reward source) -> one reward per row
    for spec in cfg.reward_fn:
        fn = load_reward_fn(spec)
        for _, path, rows in files:
            rewards[path, spec] = rewards_from_fn(fn, spec, path, rows)
    for folder in cfg.scorer:
        scorer = load_reward_model(cfg, folder)
        with tqdm(total=sum(len(rows) for _, _, rows in files), desc=f"reward ({Path(folder).name})", unit="seq") as bar:
            for _, path, rows in files:
                rewards[path, folder] = rewards_from_scorer(scorer, cfg, path, rows, bar, folder)
        del scorer

    sources = [*cfg.scorer, *cfg.reward_fn]
    result = {"files": [{"name": name, "path": path, "n": len(rows)} for name, path, rows in files], "rewards": [], "paired": []}
    for name, path, _ in files:
        for src in sources:
            v = rewards[path, src]
            stats = bootstrap_mean(cluster_means(v, [k[:2] for k in keys[path]]), cfg.bootstrap, cfg.seed)
            result["rewards"].append({"name": name, "scorer": src, "n": len(v), "prompts": len({k[:2] for k in keys[path]}),
                                      "mean": stats["mean"], "ci95": stats["ci95"]})
    for (na, pa, _), (nb, pb, _) in combinations(files, 2):
        idx = pairs[pa, pb]
        for src in sources:
            a = [rewards[pa, src][i] for i, _ in idx]
            b = [rewards[pb, src][j] for _, j in idx]
            result["paired"].append(paired(na, nb, src, a, b, [k[:2] for k in keys[pa]], cfg))
    print(table(result))
    if cfg.output:
        atomic.write_json(cfg.output, result)
        log.info("wrote %s", cfg.output)
    return result
