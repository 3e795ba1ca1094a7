"""`rdo score`: a preference dataset -> the same rows plus their raw reward differences R.

Output columns (every input column is kept unchanged):

- pairs:  `rdo_reward_diff` R, how much `chosen` beats `rejected`; reward models add
          `rdo_score_chosen`, `rdo_score_rejected`.
- ranked: `rdo_reward_diff` a K x K list, entry [i][j] = R for "response j beats response i"
          (≈ r_j - r_i, antisymmetric, diagonal 0); reward models add `rdo_scores`. With
          `--rank_with difference|reward` `scores` is rewritten by the scorer's ranking and the
          original kept as `scores_original`.

R is the raw difference: α, R <= 0 handling and normalisation are applied by `rdo align`, so an α
sweep never rescores. A difference model gives, by default, the antisymmetrised
R = (f(x, y_w, y_l) - f(x, y_l, y_w)) / 2, which cancels the model's position bias, and reports the
position-consistency rate (f changes sign when the order flips) and the mean |f(x, y, y)| residual;
`--no-symmetrize` is the paper's single pass f(x, y_w, y_l).

Speed: rows are cut into shards of similar length, each shard's sequences are sorted by length
into batches, and the forward runs under `inference_mode`. Resume: every finished shard is written
atomically to `<output>.shards/`, keyed by row; shards are a fixed function of the data, so a killed
run continues where it stopped and produces exactly the rows of an uninterrupted one.

Cross-fitting (`--folds K`): rows are split into K folds (grouped by prompt, so no prompt is both
trained on and scored), K scorers are trained with the recipe of `--scorer` (its rdo_config.json),
each on K-1 folds, and each fold is scored by the scorer that never saw it. Cost: about (K-1)x the
training compute of one scorer; scoring costs the same as without folds.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import shutil
import time
from pathlib import Path

from tqdm.auto import tqdm

from rdo.config import ScoreConfig
from rdo.data import DataError, load_records
from rdo.data.io import read_rows
from rdo.scorers import Scorer, load_scorer, tokenize_many
from rdo.shards import Shards

log = logging.getLogger("rdo.score")


# --- one row: which sequences to score, and how they combine ----------------------------------

def responses_of(rec: dict, kind: str) -> tuple[list[str], list[float]]:
    """A pair is a ranked row of two: responses [chosen, rejected] with scores [1, 0]."""
    if kind == "pair":
        return [rec["chosen"], rec["rejected"]], [1.0, 0.0]
    return rec["responses"], rec["scores"]


def comparisons(scores: list[float], symmetrize: bool) -> list[tuple[int, int]]:
    """(a, b) pairs to score as f(x, y_a, y_b): every order, or the better response first (paper)."""
    k = len(scores)
    if symmetrize:
        return [(a, b) for a in range(k) for b in range(k) if a != b]
    return [(i, j) if scores[i] >= scores[j] else (j, i) for i in range(k) for j in range(i + 1, k)]


def row_sequences(scorer: Scorer, recs: list[dict], kind: str, symmetrize: bool, dup_rows: set[int], source: str):
    """Token ids to score for each record: a list (one per record) of [(key, ids)], or a DataError."""
    tok = scorer.tok
    resp = [responses_of(r, kind) for r in recs]
    prompt_ids = tokenize_many(tok, [r["prompt"] for r in recs])
    flat = tokenize_many(tok, [y for ys, _ in resp for y in ys])
    out, pos = [], 0
    for rec, (ys, scores), x in zip(recs, resp, prompt_ids):
        ids = flat[pos : pos + len(ys)]
        pos += len(ys)
        try:
            if scorer.kind == "reward":
                enc = scorer.encoder
                p = [enc.bos] + x if enc.bos is not None and (not x or x[0] != enc.bos) else x
                p, fitted = enc.fit(p, [y + [enc.eos] for y in ids], (source, rec["rdo_row"]))
                out.append([(("s", k), p + y) for k, y in enumerate(fitted)])
            else:
                enc = scorer.diff_encoder
                seqs = [(("f", a, b), enc.assemble(x, ids[a], ids[b])) for a, b in comparisons(scores, symmetrize)]
                if rec["rdo_row"] in dup_rows:
                    seqs.append((("dup",), enc.assemble(x, ids[0], ids[0])))
                out.append(seqs)
        except DataError as err:
            out.append(err)
    return out


def combine(scorer_kind: str, kind: str, scores: list[float], values: dict, symmetrize: bool) -> tuple[dict, dict]:
    """Scores of one row's sequences -> (output columns, diagnostics)."""
    k = len(scores)
    diag: dict = {}
    if scorer_kind == "reward":
        s = [values[("s", i)] for i in range(k)]
        R = [[s[j] - s[i] for j in range(k)] for i in range(k)]
    else:
        F = {key[1:]: v for key, v in values.items() if key[0] == "f"}
        if symmetrize:
            R = [[(F[j, i] - F[i, j]) / 2 if i != j else 0.0 for j in range(k)] for i in range(k)]
            pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
            diag["consistent"] = sum((F[i, j] > 0) != (F[j, i] > 0) for i, j in pairs)
            diag["checked"] = len(pairs)
        else:
            R = [[(F[j, i] if (j, i) in F else -F[i, j]) if i != j else 0.0 for j in range(k)] for i in range(k)]
        if kind == "pair":
            diag["f_forward"] = F[0, 1] if (0, 1) in F else None  # f(x, y_w, y_l)
            diag["f_reverse"] = F.get((1, 0))  # f(x, y_l, y_w)
        if ("dup",) in values:
            diag["dup_abs"] = abs(values[("dup",)])
    if kind == "pair":
        cols = {"rdo_reward_diff": R[1][0]}
        if scorer_kind == "reward":
            cols["rdo_score_chosen"], cols["rdo_score_rejected"] = s
    else:
        cols = {"rdo_reward_diff": R}
        if scorer_kind == "reward":
            cols["rdo_scores"] = s
    return cols, diag


def rank_by(R: list[list[float]]) -> list[float]:
    """Scores from pairwise wins (R[i][j] > 0: j beats i), ties broken by summed R; tied keys tie."""
    k = len(R)
    keys = [(sum(R[i][j] > 0 for i in range(k)), sum(R[i][j] for i in range(k))) for j in range(k)]
    return [float(sum(other < key for other in keys)) for key in keys]


# --- batched scoring of a group of rows -------------------------------------------------------

def batches(lengths: list[int], batch_size: int, max_tokens: int = 0) -> list[range]:
    """Consecutive index ranges over lengths sorted longest first: at most `batch_size` sequences and,
    when `max_tokens` > 0, at most `max_tokens` padded tokens (count x first length) per batch."""
    out, start = [], 0
    while start < len(lengths):
        n = batch_size if max_tokens <= 0 else max(1, min(batch_size, max_tokens // max(lengths[start], 1)))
        out.append(range(start, min(start + n, len(lengths))))
        start += n
    return out


def score_rows(scorer: Scorer, recs: list[dict], kind: str, symmetrize: bool, dup_rows: set[int],
               batch_size: int, bar=None, source: str = "data", max_batch_tokens: int | None = None) -> list[dict]:
    """Score `recs` with length-sorted batches; one entry per record: {rdo_row, cols, diag} or {rdo_row, skipped}."""
    per_row = row_sequences(scorer, recs, kind, symmetrize, dup_rows, source)
    flat = [(r, key, ids) for r, seqs in enumerate(per_row) if not isinstance(seqs, DataError) for key, ids in seqs]
    flat.sort(key=lambda t: len(t[2]), reverse=True)  # longest first: an OOM shows up at once
    values: list[dict] = [{} for _ in recs]
    for idx in batches([len(t[2]) for t in flat], batch_size, scorer.batch_tokens(max_batch_tokens)):
        batch = flat[idx.start : idx.stop]
        for (r, key, _), v in zip(batch, scorer.forward([ids for _, _, ids in batch]).tolist()):
            values[r][key] = v
        if bar is not None:
            bar.update(len(batch))
    out = []
    for rec, seqs, vals in zip(recs, per_row, values):
        if isinstance(seqs, DataError):
            out.append({"rdo_row": rec["rdo_row"], "skipped": str(seqs), "reason": f"{seqs.field}: {seqs.reason}"})
            continue
        cols, diag = combine(scorer.kind, kind, responses_of(rec, kind)[1], vals, symmetrize)
        out.append({"rdo_row": rec["rdo_row"], "cols": cols, "diag": diag})
    return out


def n_sequences(rec: dict, kind: str, scorer_kind: str, symmetrize: bool) -> int:
    k = len(responses_of(rec, kind)[0])
    return k if scorer_kind == "reward" else len(comparisons([0.0] * k, symmetrize))


def chunks(recs: list[dict], kind: str, shard_size: int) -> list[list[dict]]:
    """Rows of similar length together (by characters), `shard_size` per chunk: a fixed function of the data."""
    def size(r):
        ys, _ = responses_of(r, kind)
        return len(r["prompt"]) * len(ys) + sum(len(y) for y in ys)
    order = sorted(recs, key=lambda r: (-size(r), r["rdo_row"]))
    return [order[i : i + shard_size] for i in range(0, len(order), shard_size)]


# --- the resume manifest ---------------------------------------------------------------------

def manifest_of(cfg: ScoreConfig) -> dict:
    """What must not change between a killed run and its resumption."""
    def ident(p: str) -> dict:
        path = Path(p)
        if path.is_file():
            st = path.stat()
            return {"path": str(path.resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
        return {"path": str(path.resolve()) if path.exists() else p}
    weights = sorted(Path(cfg.scorer).glob("*.safetensors"))
    scorer = ident(cfg.scorer) | {"weights": [ident(str(w)) for w in weights], "spec": (Path(cfg.scorer) / "rdo.json").read_text()}
    keep = ("dataset_split", "symmetrize", "rank_with", "dup_check_rows", "shard_size", "folds", "seed",
            "max_length", "max_prompt_length", "batch_size", "max_batch_tokens", "torch_dtype", "skip_invalid")
    return {"scorer": scorer, "dataset": ident(cfg.dataset_name), **{k: getattr(cfg, k) for k in keep}}


# --- the command ------------------------------------------------------------------------------

def score(cfg: ScoreConfig, on_shard=None) -> dict:
    """Score `cfg.dataset_name` into `cfg.output`; returns the summary (also written next to the output).

    `on_shard(name)` is called after each shard is written (tests use it to simulate a kill).
    """
    from rdo.models import load_tokenizer
    from rdo.scorers import ScorerSpec

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    spec = ScorerSpec.load(cfg.scorer)
    if cfg.rank_with not in ("data", spec.kind):
        raise ValueError(f"--rank_with {cfg.rank_with} needs a {cfg.rank_with} model, but {cfg.scorer} is a {spec.kind} model")
    loaded = load_records(cfg.dataset_name, split=cfg.dataset_split, tokenizer=load_tokenizer(cfg.scorer), skip_invalid=cfg.skip_invalid)
    if loaded.kind == "unpaired":
        raise ValueError(f"{cfg.dataset_name}: unpaired (KTO) rows have no pair to compare; score the paired data before unpairing it")
    if cfg.rank_with != "data" and loaded.kind != "ranked":
        raise ValueError(f"--rank_with {cfg.rank_with} re-ranks the responses of ranked rows; {cfg.dataset_name} has pairs")
    output = Path(cfg.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    shards = Shards(output, manifest_of(cfg), cfg.overwrite)
    recs = loaded.records
    dup_rows = {r["rdo_row"] for r in recs[: cfg.dup_check_rows]} if spec.kind == "difference" else set()

    start = time.perf_counter()
    if cfg.folds > 1:
        folds, (pairs, scoring_s) = cross_fit(cfg, spec, recs, loaded.kind, dup_rows, shards, on_shard)
    else:
        scorer = load_scorer(cfg.scorer, cfg.device, cfg.torch_dtype, cfg.max_length, cfg.max_prompt_length)
        folds, (pairs, scoring_s) = None, _score_into_shards(cfg, scorer, recs, loaded.kind, dup_rows, shards, "chunk", on_shard)
    seconds = time.perf_counter() - start

    summary = finalise(cfg, output, shards, recs, loaded, spec.kind, folds)
    if folds is not None:  # the K fold models stay, so a resumed or repeated run need not retrain them
        summary["folds_dir"] = str(output.with_name(output.name + ".folds"))
    summary["seconds"] = seconds
    summary["scoring_pairs_per_s"] = pairs / scoring_s if pairs and scoring_s > 0 else None  # this run's pairs only
    summary_path = output.with_name(output.stem + ".summary.json")
    summary_path.write_text(json.dumps(summary, indent=2))
    if not cfg.keep_shards:
        shards.remove()
    log.info("wrote %s (%d rows) and %s", output, summary["rows_written"], summary_path)
    return summary


def _score_into_shards(cfg, scorer: Scorer, recs, kind, dup_rows, shards: Shards, prefix: str, on_shard) -> tuple[int, float]:
    """Score the chunks of `recs` not yet in `shards`; returns (pairs scored, seconds)."""
    todo = [(f"{prefix}-{c:05d}", chunk) for c, chunk in enumerate(chunks(recs, kind, cfg.shard_size))]
    todo = [(name, chunk) for name, chunk in todo if not shards.done(name)]
    total = sum(n_sequences(r, kind, scorer.kind, cfg.symmetrize) for _, chunk in todo for r in chunk)
    pairs = sum(len(comparisons(responses_of(r, kind)[1], False)) for _, chunk in todo for r in chunk)
    bar = tqdm(total=total, desc=f"scoring ({scorer.kind})", unit="seq")
    start, done_pairs = time.perf_counter(), 0
    for name, chunk in todo:
        entries = score_rows(scorer, chunk, kind, cfg.symmetrize, dup_rows, cfg.batch_size, bar, cfg.dataset_name, cfg.max_batch_tokens)
        shards.write(name, entries)
        done_pairs += sum(len(comparisons(responses_of(r, kind)[1], False)) for r in chunk)
        bar.set_postfix(pairs_per_s=f"{done_pairs / (time.perf_counter() - start):.1f}")
        if on_shard is not None:
            on_shard(name)
    bar.close()
    seconds = time.perf_counter() - start
    if todo:
        log.info("scored %d pairs in %.1fs (%.1f pairs/s)", pairs, seconds, pairs / seconds)
    return pairs, seconds


def finalise(cfg: ScoreConfig, output: Path, shards: Shards, recs, loaded, scorer_kind: str, folds) -> dict:
    """Concatenate the shards in input order onto the raw input rows; check nothing is lost or doubled."""
    entries = shards.read_all()
    missing = [r["rdo_row"] for r in recs if r["rdo_row"] not in entries]
    if missing:
        raise RuntimeError(f"{len(missing)} row(s) have no score (first: row {missing[0]}); rerun `rdo score` to finish them")
    raw = dict(read_rows(cfg.dataset_name, cfg.dataset_split))
    rows, diffs, diags, skipped = [], [], [], {}
    for rec in recs:
        e = entries[rec["rdo_row"]]
        if "skipped" in e:
            skipped[e["reason"]] = skipped.get(e["reason"], 0) + 1
            continue
        row = dict(raw[rec["rdo_row"]])
        row.update(e["cols"])
        if cfg.rank_with != "data":
            row.setdefault("scores_original", row["scores"])  # re-ranking a re-ranked file keeps the first original
            row["scores"] = rank_by(e["cols"]["rdo_reward_diff"])
        if folds is not None:
            row["rdo_fold"] = folds[rec["rdo_row"]]
        rows.append(row)
        diags.append(e["diag"])
        R = e["cols"]["rdo_reward_diff"]
        if loaded.kind == "pair":
            diffs.append(R)
        else:  # every pair the data ranks: j beats i by the data's scores
            s = rec["scores"]
            diffs += [R[i][j] for i in range(len(s)) for j in range(len(s)) if s[j] > s[i]]
    if not rows:
        raise ValueError(f"{cfg.dataset_name}: every row was skipped: {skipped}")
    tmp = output.with_name(output.name + ".tmp")
    if output.suffix == ".parquet":
        from datasets import Dataset

        Dataset.from_list(rows).to_parquet(str(tmp))
    else:
        with tmp.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, output)
    return summarise(cfg, scorer_kind, rows, diffs, diags, loaded, skipped)


def summarise(cfg, scorer_kind, rows, diffs, diags, loaded, skipped) -> dict:
    import torch

    r = torch.tensor(diffs, dtype=torch.float64)
    q = torch.quantile(r, torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64)).tolist()
    out = {
        "scorer": cfg.scorer, "kind": scorer_kind, "dataset": cfg.dataset_name, "output": cfg.output,
        "format": loaded.fmt, "rows_written": len(rows), "pairs": len(diffs),
        "skipped": {"at_load": loaded.skips.as_dict(), "too_long": skipped},
        "symmetrize": cfg.symmetrize if scorer_kind == "difference" else None, "folds": cfg.folds,
        "reward_diff": {"mean": float(r.mean()), "q05": q[0], "median": q[1], "q95": q[2]},
        # how often the scorer agrees with the data's preference (in-sample accuracy when not cross-fitted)
        "frac_agree_with_labels": float((r > 0).double().mean()),
    }
    if scorer_kind == "difference":
        checked = sum(d.get("checked", 0) for d in diags)
        dups = [d["dup_abs"] for d in diags if "dup_abs" in d]
        out["position_consistency"] = sum(d.get("consistent", 0) for d in diags) / checked if checked else None
        out["mean_abs_f_dup"] = sum(dups) / len(dups) if dups else None
        out["dup_checked_rows"] = len(dups)
    return out


# --- cross-fitting ----------------------------------------------------------------------------

def assign_folds(recs: list[dict], k: int, seed: int) -> dict[int, int]:
    """rdo_row -> fold, grouping rows by prompt and balancing fold sizes; deterministic in `seed`."""
    groups: dict[str, list[int]] = {}
    for r in recs:
        groups.setdefault(r["prompt"], []).append(r["rdo_row"])
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
    """The training config a scorer was trained with (its rdo_config.json), as its config class."""
    from rdo.config import TrainDiffConfig, TrainRMConfig

    path = Path(scorer) / "rdo_config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: --folds retrains the scorer with its recipe, but {scorer} has no rdo_config.json "
                                "(it was not trained by `rdo train-rm` / `rdo train-diff`)")
    cls = TrainRMConfig if kind == "reward" else TrainDiffConfig
    init = {f.name for f in dataclasses.fields(cls) if f.init}
    values = json.loads(path.read_text())
    # A fold resumes from its own folder's checkpoints, never from the path the scorer itself resumed from.
    per_run = ("logging_dir", "resume_from_checkpoint")
    return cls, {k: v for k, v in values.items() if k in init and not k.endswith("_token") and k not in per_run}


def cross_fit(cfg: ScoreConfig, spec, recs, kind, dup_rows, shards: Shards, on_shard) -> tuple[dict[int, int], tuple[int, float]]:
    """Train K scorers on K-1 folds each and score every fold with the one that did not see it.

    Returns (rdo_row -> fold, (pairs scored, scoring seconds)).
    """
    from rdo.train_scorers import train_diff, train_rm

    cls, recipe = recipe_of(cfg.scorer, spec.kind)
    fold_of = assign_folds(recs, cfg.folds, cfg.seed)
    work = Path(cfg.output).with_name(Path(cfg.output).name + ".folds")
    work.mkdir(exist_ok=True)
    raw = dict(read_rows(cfg.dataset_name, cfg.dataset_split))
    pairs, seconds = 0, 0.0
    for k in range(cfg.folds):
        held_out = [r for r in recs if fold_of[r["rdo_row"]] == k]
        names = [f"fold{k}-{c:05d}" for c in range(len(chunks(held_out, kind, cfg.shard_size)))]
        if all(shards.done(n) for n in names):
            continue
        model_dir = work / f"fold-{k}"
        if not (model_dir / "rdo.json").is_file():  # a finished fold model is reused on resume
            train_file = work / f"fold-{k}-train.jsonl"
            train_rows = [raw[r["rdo_row"]] for r in recs if fold_of[r["rdo_row"]] != k]
            train_file.write_text("".join(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in train_rows))
            log.info("cross-fitting: training fold %d/%d on %d rows", k + 1, cfg.folds, len(train_rows))
            fold_cfg = cls(**{**recipe, "dataset_name": str(train_file), "dataset_split": "train",
                              "eval_dataset_name": None, "output_dir": str(model_dir), "seed": recipe.get("seed", 42) + k})
            (train_rm if spec.kind == "reward" else train_diff)(fold_cfg)
        scorer = load_scorer(str(model_dir), cfg.device, cfg.torch_dtype, cfg.max_length, cfg.max_prompt_length)
        p, s = _score_into_shards(cfg, scorer, held_out, kind, dup_rows, shards, f"fold{k}", on_shard)
        pairs, seconds = pairs + p, seconds + s
        del scorer
    return fold_of, (pairs, seconds)
