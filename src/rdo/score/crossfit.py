"""Cross-fitting (`rdo score --folds K`): K fold models, each trained on K-1 folds, each scoring only
the fold it never saw, so no coefficient is scored in-sample.

- Folds group rows by prompt (no prompt is both trained on and scored) and balance their sizes;
  the split is a fixed function of the prompts and `--seed`.
- Each fold model is trained with the recipe of `--scorer` (its rdo_config.json). A recipe given in
  steps (`max_steps`) is converted to the epochs the full scorer trained (its train_metrics.json),
  so a fold model on (K-1)/K of the rows sees each row as often as the full model did, not more.
- Every fold model is keyed by what it was trained on: the content of its training rows, the
  recipe (its base model by content fingerprint, not by path) and its seed. The key is stored in
  `<output>.folds/fold-k/rdo_fold.json`; a model whose key differs (another `--seed`, an edited
  dataset, another recipe) is retrained, and the log says why. A finished model with the same key
  is reused, so a resumed or repeated run does not retrain it.
- The fold of every row is the output's `rdo_fold` column; `<stem>.folds.json` next to the output
  records each fold's key, model folder and row counts.

Cost: K trainings on (K-1)/K of the rows each, about (K-1)x one scorer's training; scoring costs the
same as without folds.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

from rdo.utils import atomic
from rdo.utils.content import config_content
from rdo.utils.fingerprint import digest

log = logging.getLogger("rdo.score.crossfit")

KEY_FILE = "rdo_fold.json"
# recipe fields that name where things are, not what is trained: left out of the key
PLACES = ("output_dir", "logging_dir", "run_name", "dataset_name", "dataset_split", "eval_dataset_name", "eval_dataset_split")


def assign_folds(recs: list[dict], k: int, seed: int) -> dict[int, int]:
    """rdo_row -> fold, grouping rows by prompt and balancing fold sizes; deterministic in `seed`."""
    groups: dict[str, list[int]] = {}
    for r in recs:
        prompt = r["prompt"] if isinstance(r["prompt"], str) else json.dumps(r["prompt"], sort_keys=True)  # a message list
        groups.setdefault(prompt, []).append(r["rdo_row"])
    if len(groups) < k:
        raise ValueError(f"--folds {k}: the data has only {len(groups)} distinct prompt(s); use fewer folds")
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    sizes = [0] * k
    fold_of: dict[int, int] = {}
    for key in keys:
        f = min(range(k), key=lambda i: (sizes[i], i))
        for row in groups[key]:
            fold_of[row] = f
        sizes[f] += len(groups[key])
    return fold_of


def recipe_of(scorer: str, kind: str):
    """(config class, recipe values) a scorer was trained with, with a step budget turned into epochs."""
    from rdo.config import TrainDiffConfig, TrainRMConfig

    path = Path(scorer) / "rdo_config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: --folds retrains the scorer with its recipe, but {scorer} has no rdo_config.json "
                                "(it was not trained by `rdo train-rm` / `rdo train-diff`)")
    cls = TrainRMConfig if kind == "reward" else TrainDiffConfig
    init = {f.name for f in dataclasses.fields(cls) if f.init}
    values = json.loads(path.read_text())
    recipe = {k: v for k, v in values.items() if k in init and not k.endswith("_token") and k != "logging_dir"}
    if (recipe.get("max_steps") or -1) > 0:
        # K-1 folds hold fewer rows than the full data: the same steps would be more epochs
        metrics = Path(scorer) / "train_metrics.json"
        epoch = json.loads(metrics.read_text()).get("train", {}).get("epoch") if metrics.is_file() else None
        if not epoch:
            raise ValueError(f"{path}: the recipe gives max_steps={recipe['max_steps']} but {metrics} does not say how many "
                             "epochs that was, so fold models cannot train as long as the full scorer; "
                             "set num_train_epochs (and max_steps -1) in the recipe")
        log.info("cross-fitting: the recipe's max_steps=%d was %.4g epoch(s) of the full scorer; fold models train %.4g epoch(s)",
                 recipe["max_steps"], epoch, epoch)
        recipe = {**recipe, "max_steps": -1, "num_train_epochs": float(epoch)}
    return cls, recipe


@dataclass
class FoldPlan:
    """What each fold model is trained on and its key; computed before any training."""

    kind: str  # reward or difference
    folds: int
    seed: int
    fold_of: dict[int, int]  # rdo_row -> fold
    work: Path  # <output>.folds/
    cls: type
    recipes: list[dict]  # per fold: the training config's values
    train_rows: list[list[dict]]  # per fold: the raw rows it trains on (every other fold)
    parts: list[dict]  # per fold: what its key is made of
    keys: list[str]

    def model_dir(self, k: int) -> Path:
        return self.work / f"fold-{k}"


def plan(scorer: str, kind: str, output: Path, folds: int, seed: int, recs: list[dict], raw: dict[int, dict]) -> FoldPlan:
    """The fold split, each fold's training rows and recipe, and its key (training rows, recipe, seed)."""
    cls, recipe = recipe_of(scorer, kind)
    fold_of = assign_folds(recs, folds, seed)
    work = output.with_name(output.name + ".folds")
    models = config_content(cls=cls, values=recipe, kinds=("model",))  # the base model by content, not by path
    recipe_key = digest({**{k: v for k, v in recipe.items() if k not in PLACES}, **models})
    recipes, train_rows, parts = [], [], []
    for k in range(folds):
        rows = [raw[r["rdo_row"]] for r in recs if fold_of[r["rdo_row"]] != k]
        model_dir = work / f"fold-{k}"
        fold_seed = recipe.get("seed", 42) + k
        recipes.append({**recipe, "dataset_name": str(work / f"fold-{k}-train.jsonl"), "dataset_split": "train",
                        "eval_dataset_name": None, "output_dir": str(model_dir), "seed": fold_seed})
        train_rows.append(rows)
        parts.append({"training rows": digest(rows), "recipe": recipe_key, "seed": fold_seed})
    return FoldPlan(kind, folds, seed, fold_of, work, cls, recipes, train_rows, parts, [digest(p) for p in parts])


def fold_model(p: FoldPlan, k: int) -> tuple[Path, bool]:
    """Fold k's model folder: reused when its stored key matches, else (re)trained. Returns (folder, trained now)."""
    from rdo.score.training import train_diff, train_rm

    model_dir = p.model_dir(k)
    stored = _stored(model_dir)
    if stored is not None and stored.get("key") == p.keys[k]:
        log.info("cross-fitting: fold %d/%d: reusing %s (same training rows, recipe and seed)", k + 1, p.folds, model_dir)
        return model_dir, False
    if stored is None:
        why = "no trained fold model"
    else:
        old = stored.get("parts", {})
        why = "key changed: " + ", ".join(n for n in p.parts[k] if old.get(n) != p.parts[k][n])
    log.info("cross-fitting: fold %d/%d: training on %d rows (%s)", k + 1, p.folds, len(p.train_rows[k]), why)
    shutil.rmtree(model_dir, ignore_errors=True)  # nothing of a stale model may survive next to the new one
    p.work.mkdir(parents=True, exist_ok=True)
    atomic.write_jsonl(Path(p.recipes[k]["dataset_name"]), p.train_rows[k])
    cfg = p.cls(**p.recipes[k])
    (train_rm if p.kind == "reward" else train_diff)(cfg)
    # written last: a killed training leaves no key, so the half-made model is never reused
    atomic.write_json(model_dir / KEY_FILE, {"key": p.keys[k], "parts": p.parts[k], "fold": k,
                                             "rows": sorted(r for r, f in p.fold_of.items() if f != k)})
    return model_dir, True


def _stored(model_dir: Path) -> dict | None:
    path = model_dir / KEY_FILE
    if not (path.is_file() and (model_dir / "rdo.json").is_file()):
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        return None


def write_manifest(p: FoldPlan, path: Path, trained: dict[int, bool]) -> None:
    """`<stem>.folds.json`: the split and, per fold, its key, model folder and row counts."""
    models = [{"fold": k, "key": p.keys[k], "key_parts": p.parts[k], "model": str(p.model_dir(k)),
               "rows_trained": len(p.train_rows[k]), "rows_scored": sum(f == k for f in p.fold_of.values()),
               "trained_this_run": trained.get(k, False)} for k in range(p.folds)]
    atomic.write_json(path, {"folds": p.folds, "seed": p.seed, "models": models,
                             "assignment": {str(r): f for r, f in sorted(p.fold_of.items())}})
