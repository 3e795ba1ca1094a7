"""`rdo score`: a preference dataset -> the same rows plus their raw reward differences R.

Output columns (every input column is kept unchanged):

- pairs:  `rdo_reward_diff` R, how much `chosen` beats `rejected`; reward models add
          `rdo_score_chosen`, `rdo_score_rejected`.
- ranked: `rdo_reward_diff` a K x K list, entry [i][j] = R for "response j beats response i"
          (≈ r_j - r_i, antisymmetric, diagonal 0); reward models add `rdo_scores`. With
          `--rank_with difference|reward` `scores` is rewritten by the scorer's ranking and the
          original kept as `scores_original`.
- `--folds K`: `rdo_fold`, the fold whose model scored the row (cross-fitting: rdo.score.crossfit).
- `--weight_column NAME`: the final training weight, R^α after the R <= 0 policy and normalisation over
          the written rows (rdo.core.coefficients, as `rdo align` computes it from the same rows); 0 marks a
          pair `--coef_nonpositive drop` removes. Ranked rows get a K x K list, nonzero where RRHF ranks.

R is the raw difference: α, R <= 0 handling and normalisation are applied by `rdo align`, so an α
sweep never rescores. A difference model gives, by default, the antisymmetrised
R = (f(x, y_w, y_l) - f(x, y_l, y_w)) / 2, which cancels the model's position bias, and reports the
position-consistency rate (f changes sign when the order flips) and the mean |f(x, y, y)| residual;
`--no-symmetrize` is the paper's single pass f(x, y_w, y_l). Both are printed at the end of the run.

Every row is scored: a reward model whose rdo.json sets no max_prompt_length cuts a prompt that
leaves no room for a response from the left (to max_length - 2 tokens), as the truncation rule does
for a set one. A row that still cannot be scored is logged with its line number and counted.

Speed: rows are cut into shards of similar length, each shard's sequences are sorted by length
into batches, and the forward runs under `inference_mode`. Resume: every finished shard is written
atomically to `<output>.shards/`; a rerun scores only the rows no shard holds, so a killed run
produces the rows of an uninterrupted one. The manifest keys only what changes the values
(`manifest_of`): after an out-of-memory, a rerun with a smaller `--batch_size`, `--max_batch_tokens`
or another `--shard_size` continues where it stopped.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from tqdm.auto import tqdm

from rdo.utils import atomic
from rdo.config import ScoreConfig
from rdo.data import DataError, load_records
from rdo.data.formats import CHAT_KEY
from rdo.data.io import read_rows
from rdo.score.scorers import Scorer, load_scorer, response_span
from rdo.utils.shards import Shards

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
    """Token ids to score for each record: a list (one per record) of [(key, ids, spans)], or a DataError
    (spans: what `--pooling mean` reads, `rdo.score.scorers.pool_weights`).

    Reward models see exactly `rdo align`'s ids (`Encoder`: BOS rule, response ends, truncation);
    difference models the template of `DifferenceEncoder`, built on the same encoder.
    """
    resp = [responses_of(r, kind) for r in recs]
    chats = [bool(r.get(CHAT_KEY)) for r in recs]
    out = []
    if scorer.kind == "reward":
        enc = scorer.encoder
        prompt_ids = enc.tokens([r["prompt"] for r in recs])
        flat = enc.tokens([y for ys, _ in resp for y in ys])
        pos = 0
        for rec, (ys, _), x, chat in zip(recs, resp, prompt_ids, chats):
            ids = flat[pos : pos + len(ys)]
            pos += len(ys)
            try:
                p, fitted = enc.fit(enc.with_bos(x), [enc.ended(y, chat) for y in ids], (source, rec["rdo_row"]))
                out.append([(("s", k), p + y, response_span(len(p), len(y))) for k, y in enumerate(fitted)])
            except DataError as err:
                out.append(err)
        cuts = enc.cuts
    else:
        enc = scorer.diff_encoder
        xs, ys_ids = enc.query_and_responses([r["prompt"] for r in recs], [ys for ys, _ in resp], chats)
        for rec, (_, scores), x, ids in zip(recs, resp, xs, ys_ids):
            pairs = comparisons(scores, symmetrize)
            where = (source, rec["rdo_row"])  # cuts are counted once per row, on its first comparison
            seqs = [(("f", a, b), *enc.assemble_pooled(x, ids[a], ids[b], where if i == 0 else None)) for i, (a, b) in enumerate(pairs)]
            if rec["rdo_row"] in dup_rows:
                seqs.append((("dup",), *enc.assemble_pooled(x, ids[0], ids[0])))
            out.append(seqs)
        cuts = enc.base.cuts
    if cuts.prompts or cuts.responses:
        log.warning("%s: %s (so far)", source, cuts.summary())
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
               batch_size: int, bar=None, source: str = "data", max_batch_tokens: int | None = None,
               prefix_sharing: bool = False) -> list[dict]:
    """Score `recs` with length-sorted batches; one entry per record: {rdo_row, cols, diag} or {rdo_row, skipped}.

    `prefix_sharing` (reward models): a row's sequences go through one `[prefix | rest_1 | ... | rest_K]`
    sequence, the prefix their longest common one (the prompt, at least): exact, as a reward model reads
    each sequence's last token only.
    """
    per_row = row_sequences(scorer, recs, kind, symmetrize, dup_rows, source)
    values: list[dict] = [{} for _ in recs]
    if prefix_sharing and scorer.kind == "reward" and scorer.spec.pooling == "last":
        _score_shared(scorer, per_row, values, batch_size, bar, max_batch_tokens)
    else:  # one padded sequence each (difference models; --pooling mean reads each response's span)
        flat = [(r, key, ids, spans) for r, seqs in enumerate(per_row) if not isinstance(seqs, DataError) for key, ids, spans in seqs]
        flat.sort(key=lambda t: len(t[2]), reverse=True)  # longest first: an OOM shows up at once
        for idx in batches([len(t[2]) for t in flat], batch_size, scorer.batch_tokens(max_batch_tokens)):
            batch = flat[idx.start : idx.stop]
            for (r, key, _, _), v in zip(batch, scorer.forward([t[2] for t in batch], [t[3] for t in batch]).tolist()):
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


def _score_shared(scorer: Scorer, per_row: list, values: list[dict], batch_size: int, bar, max_batch_tokens) -> None:
    """`score_rows` with each row's sequences sharing their common prefix; fills `values[r][key]`."""
    groups = []  # (r, keys, prefix, rests, tokens)
    for r, seqs in enumerate(per_row):
        if isinstance(seqs, DataError) or not seqs:
            continue
        ids = [s for _, s, _ in seqs]
        n = min(len(s) for s in ids) - 1  # every rest keeps at least its last token, where the score is read
        common = next((i for i in range(n) if len({s[i] for s in ids}) > 1), n)
        rests = [s[common:] for s in ids]
        groups.append((r, [k for k, _, _ in seqs], ids[0][:common], rests, common + sum(len(x) for x in rests)))
    groups.sort(key=lambda g: g[4], reverse=True)  # longest first: an OOM shows up at once
    per_forward = max(1, batch_size // max((len(g[1]) for g in groups), default=1))  # --batch_size counts sequences
    for idx in batches([g[4] for g in groups], per_forward, scorer.batch_tokens(max_batch_tokens)):
        batch = groups[idx.start : idx.stop]
        scores = iter(scorer.forward_shared([g[2] for g in batch], [g[3] for g in batch]).tolist())
        for r, keys, *_ in batch:
            for key in keys:
                values[r][key] = next(scores)
        if bar is not None:
            bar.update(sum(len(g[1]) for g in batch))


def n_sequences(rec: dict, kind: str, scorer_kind: str, symmetrize: bool, dup: bool = False) -> int:
    """Sequences `row_sequences` makes for one row (`dup`: the row also gets the f(x, y, y) check)."""
    k = len(responses_of(rec, kind)[0])
    return k if scorer_kind == "reward" else len(comparisons([0.0] * k, symmetrize)) + int(dup)


def chunks(recs: list[dict], kind: str, shard_size: int) -> list[list[dict]]:
    """Rows of similar length together (by characters), `shard_size` per chunk: a fixed function of the data."""
    def size(r):
        ys, _ = responses_of(r, kind)
        return len(r["prompt"]) * len(ys) + sum(len(y) for y in ys)
    order = sorted(recs, key=lambda r: (-size(r), r["rdo_row"]))
    return [order[i : i + shard_size] for i in range(0, len(order), shard_size)]


# --- the resume manifest ---------------------------------------------------------------------

def manifest_of(cfg: ScoreConfig, scorer_key: str, data_key: str, lengths: tuple, fold_keys: list[str] | None) -> dict:
    """What decides the values in the shards; a change refuses to mix old shards with new ones.

    Keyed: the scorer by content (weights, config, rdo.json, tokenizer), the rows by content, how R
    is computed (symmetrize, the f(x, y, y) rows), the effective truncation, the weights dtype, and
    with --folds the split (folds, seed) and every fold model's key. Not keyed, because they change
    only speed or presentation: batch_size, max_batch_tokens and shard_size (resume is per row),
    device, rank_with and weight_column with its --alpha / --coef_* (applied to the stored R when the
    output is assembled), skip_invalid (the rows it leaves are in the data key), keep_shards.
    """
    out = {"scorer": scorer_key, "data": data_key, "symmetrize": cfg.symmetrize, "dup_check_rows": cfg.dup_check_rows,
           "max_length": lengths[0], "max_prompt_length": lengths[1], "torch_dtype": cfg.torch_dtype}
    if fold_keys is not None:
        out |= {"folds": cfg.folds, "seed": cfg.seed, "fold_models": fold_keys}
    return out


def scoring_lengths(spec, cfg) -> tuple[int, int | None]:
    """(max_length, max_prompt_length) to score with: the overrides, else rdo.json's; a reward model with
    no prompt cap gets max_length - 2, so a long prompt is cut from the left instead of its row dropped."""
    resolved = spec.with_lengths(cfg.max_length, cfg.max_prompt_length)
    if resolved.kind == "reward" and resolved.max_prompt_length is None:
        return resolved.max_length, resolved.max_length - 2
    return resolved.max_length, resolved.max_prompt_length


# --- the command ------------------------------------------------------------------------------

def score(cfg: ScoreConfig, on_shard=None) -> dict:
    """Score `cfg.dataset_name` into `cfg.output`; returns the summary (also written next to the output).

    `on_shard(name)` is called after each shard is written (tests use it to simulate a kill).
    """
    from rdo.score import crossfit
    from rdo.utils.fingerprint import digest, model_fingerprint, tokenizer_fingerprint
    from rdo.models import load_tokenizer
    from rdo.score.scorers import ScorerSpec

    from rdo.utils import distributed as dist

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    dist.init()  # under torchrun every process scores its share of the chunks; the main one writes the output
    device = str(dist.device(cfg.device))
    spec = ScorerSpec.load(cfg.scorer)
    if cfg.rank_with not in ("data", spec.kind):
        raise ValueError(f"--rank_with {cfg.rank_with} needs a {cfg.rank_with} model, but {cfg.scorer} is a {spec.kind} model")
    tok = load_tokenizer(cfg.scorer)
    loaded = load_records(cfg.dataset_name, split=cfg.dataset_split, tokenizer=tok, skip_invalid=cfg.skip_invalid,
                          dedupe_ids=cfg.dedupe_ids)
    if loaded.kind == "unpaired":
        raise ValueError(f"{cfg.dataset_name}: unpaired (KTO) rows have no pair to compare; score the paired data before unpairing it")
    if cfg.rank_with != "data" and loaded.kind != "ranked":
        raise ValueError(f"--rank_with {cfg.rank_with} re-ranks the responses of ranked rows; {cfg.dataset_name} has pairs")
    output = Path(cfg.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    recs = loaded.records
    lengths = scoring_lengths(spec, cfg)
    plan = None
    if cfg.folds > 1 and dist.world_size() > 1:
        raise ValueError("--folds trains scorers inside `rdo score`; run cross-fitting as one process (not under torchrun), "
                         "or score with an already trained scorer under torchrun")
    if cfg.folds > 1:
        plan = crossfit.plan(cfg.scorer, spec.kind, output, cfg.folds, cfg.seed, recs, dict(read_rows(cfg.dataset_name, cfg.dataset_split)))
    scorer_key = digest({"model": model_fingerprint(cfg.scorer), "tokenizer": tokenizer_fingerprint(tok)})
    with dist.main_first():  # the main process clears a stale folder before the others open it
        shards = Shards(output, manifest_of(cfg, scorer_key, digest(recs), lengths, plan.keys if plan else None), cfg.overwrite)
    dup_rows = {r["rdo_row"] for r in recs[: cfg.dup_check_rows]} if spec.kind == "difference" else set()

    start = time.perf_counter()
    if plan is not None:
        pairs, scoring_s, trained = 0, 0.0, {}
        for k in range(plan.folds):
            held_out = [r for r in recs if plan.fold_of[r["rdo_row"]] == k]
            if not _todo(held_out, shards):
                continue  # this fold is scored already (a resumed run): its model is not needed
            model_dir, trained[k] = crossfit.fold_model(plan, k)
            scorer = load_scorer(str(model_dir), device, cfg.torch_dtype, *lengths, attn_implementation=cfg.attn_implementation)
            p, s = _score_into_shards(cfg, scorer, held_out, loaded.kind, dup_rows, shards, f"fold{k}", on_shard)
            pairs, scoring_s = pairs + p, scoring_s + s
            del scorer
        crossfit.write_manifest(plan, output.with_name(output.stem + ".folds.json"), trained)
    else:
        scorer = load_scorer(cfg.scorer, device, cfg.torch_dtype, *lengths, attn_implementation=cfg.attn_implementation)
        pairs, scoring_s = _score_into_shards(cfg, scorer, recs, loaded.kind, dup_rows, shards, "chunk", on_shard)
    seconds = time.perf_counter() - start
    dist.barrier()  # every process's shards are written
    if not dist.is_main():
        return {}

    summary = finalise(cfg, output, shards, recs, loaded, spec.kind, plan.fold_of if plan else None)
    if plan is not None:  # the K fold models stay, so a resumed or repeated run need not retrain them
        summary["folds_dir"] = str(plan.work)
        summary["folds_manifest"] = str(output.with_name(output.stem + ".folds.json"))
    summary["seconds"] = seconds
    summary["scoring_pairs_per_s"] = pairs / scoring_s if pairs and scoring_s > 0 else None  # this run's pairs only
    summary_path = output.with_name(output.stem + ".summary.json")
    atomic.write_json(summary_path, summary)
    if not cfg.keep_shards:
        shards.remove()
    print(format_summary(summary))
    log.info("wrote %s (%d rows) and %s", output, summary["rows_written"], summary_path)
    return summary


def _todo(recs: list[dict], shards: Shards) -> list[dict]:
    """The rows no finished shard holds: resume is per row, so it survives a new --shard_size."""
    done = shards.read_all()
    return [r for r in recs if r["rdo_row"] not in done]


def _score_into_shards(cfg, scorer: Scorer, recs, kind, dup_rows, shards: Shards, prefix: str, on_shard) -> tuple[int, float]:
    """Score the rows of `recs` not yet in `shards`, a chunk per shard; returns (pairs scored, seconds)."""
    from rdo.utils.fingerprint import digest

    from rdo.utils import distributed as dist

    todo = chunks(_todo(recs, shards), kind, cfg.shard_size)
    dist.barrier()  # all processes listed the same unfinished chunks before any writes one
    todo = dist.my_share(todo)
    total = sum(n_sequences(r, kind, scorer.kind, cfg.symmetrize, r["rdo_row"] in dup_rows) for chunk in todo for r in chunk)
    pairs = sum(len(comparisons(responses_of(r, kind)[1], False)) for chunk in todo for r in chunk)
    bar = tqdm(total=total, desc=f"scoring ({scorer.kind})", unit="seq", disable=not dist.is_main() or None)
    start, done_pairs = time.perf_counter(), 0
    for chunk in todo:
        name = f"{prefix}-{digest([r['rdo_row'] for r in chunk])[:12]}"  # named by its rows: unique across resumes
        entries = score_rows(scorer, chunk, kind, cfg.symmetrize, dup_rows, cfg.batch_size, bar, cfg.dataset_name, cfg.max_batch_tokens,
                             cfg.prefix_sharing)
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
        if "skipped" in e:  # never silent: each one is named here and counted in the summary
            log.warning("row %d not scored: %s", rec["rdo_row"], e["skipped"])
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
    weight_stats = add_weights(cfg, rows, loaded.kind) if cfg.weight_column else None
    with atomic.atomic_path(output) as tmp:
        if output.suffix == ".parquet":
            from datasets import Dataset

            Dataset.from_list(rows).to_parquet(str(tmp))
        else:
            with tmp.open("w", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
    summary = summarise(cfg, scorer_kind, rows, diffs, diags, loaded, skipped)
    if weight_stats is not None:
        summary["weights"] = {"column": cfg.weight_column, **weight_stats}
    return summary


def add_weights(cfg: ScoreConfig, rows: list[dict], kind: str) -> dict:
    """Write each row's training weight into `cfg.weight_column`, by the one coefficient policy; returns its stats.

    The policy sees the written rows' R over the whole file, as `rdo align` does when it trains on this output.
    """
    from rdo.core.coefficients import format_stats, ranked_weights

    policy = cfg.policy
    if kind == "pair":
        weights, _, stats = policy.weights([row["rdo_reward_diff"] for row in rows])
        for row, w in zip(rows, weights.tolist()):
            row[cfg.weight_column] = w
    else:
        weights, _, stats = ranked_weights(policy, [row["scores"] for row in rows], [row["rdo_reward_diff"] for row in rows])
        for row, w in zip(rows, weights):
            row[cfg.weight_column] = w
    log.info("%s: %s", cfg.weight_column, format_stats(stats))
    return stats


def summarise(cfg, scorer_kind, rows, diffs, diags, loaded, skipped) -> dict:
    import torch

    r = torch.tensor(diffs, dtype=torch.float64)
    q = torch.quantile(r, torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64)).tolist()
    out = {
        "scorer": cfg.scorer, "kind": scorer_kind, "dataset": cfg.dataset_name, "output": cfg.output,
        "format": loaded.fmt, "rows_read": len(loaded.records) + loaded.skips.total, "rows_written": len(rows),
        "rows_dropped": loaded.skips.total + sum(skipped.values()), "pairs": len(diffs),
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


def format_summary(s: dict) -> str:
    """The end-of-run table: rows in and out, R, and the difference model's checks."""
    def num(v):
        return "n/a" if v is None else f"{v:.4f}"

    lines = [f"rdo score: {s['output']}  ({s['kind']} model{', %d folds' % s['folds'] if s['folds'] > 1 else ''})",
             f"  rows read / written / dropped   {s['rows_read']} / {s['rows_written']} / {s['rows_dropped']}",
             f"  pairs                           {s['pairs']}",
             f"  R mean [q05, median, q95]       {num(s['reward_diff']['mean'])} [{num(s['reward_diff']['q05'])}, "
             f"{num(s['reward_diff']['median'])}, {num(s['reward_diff']['q95'])}]",
             f"  agree with the data's labels    {num(s['frac_agree_with_labels'])}"]
    if "weights" in s:
        w, p = s["weights"], s["weights"]["policy"]
        lines.append(f"  {w['column']} (alpha={p['alpha']} {p['nonpositive']} {p['normalize']})".ljust(34)
                     + f"mean {num(w['weight']['mean'])} [min {num(w['weight']['q00'])}, max {num(w['weight']['q100'])}], "
                     f"dropped {w['frac_dropped']:.1%}")
    if s["kind"] == "difference":
        lines += [f"  position consistency            {num(s['position_consistency'])}",
                  f"  mean |f(x,y,y)|                 {num(s['mean_abs_f_dup'])}  (over {s['dup_checked_rows']} rows)"]
    return "\n".join(lines)
