"""`rdo demo`: the RDO study in miniature, as a list of stages each calling one rdo command.

1. data        labels for the shipped SmolLM2 candidates, drawn from a Bradley-Terry model of the
               gold reward (VADER) with temperature tau: noisy training pairs, a subset of them for
               DPO, and held-out pairs ordered by the gold reward itself (the true preference)
2. train-rm    `rdo train-rm` (the top 2 layers and the head trained, the frozen layers' output cached),
               then `rdo eval accuracy` on the held-out pairs
3. train-diff  `rdo train-diff` (a trained head on the frozen LM, cached), then `rdo eval accuracy`
4. score       `rdo score` writes R into the DPO pairs, once per scorer (cross-fitted with --folds K)
5. align       `rdo align`: DPO, DPO+rc (reward model R), DPO+rc (difference model R) on the same pairs,
               and DPO on those pairs in their true order (what the wrong labels cost DPO)
6. generate    `rdo generate`: greedy answers of the base model and the four policies to the held-out prompts
7. gold        `rdo eval reward --reward_fn rdo.demo.task:vader_reward`: means with bootstrap intervals, paired differences vs DPO

Every stage reruns on every call (each is deterministic for the seed), so a run folder never mixes
results of different settings. Generation and gold scoring are the two small functions
`greedy_answers` (`rdo generate`) and `gold_rewards` (`rdo eval reward --reward_fn`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from rdo.utils import atomic
from rdo.config import DemoConfig

log = logging.getLogger("rdo.demo")


@dataclass(frozen=True)
class Preset:
    """Sizes and recipes of one demo preset (chosen once for the time budget, not tuned on the outcome)."""

    train_prompts: int | None  # None: every training prompt of the task
    test_prompts: int | None
    dpo_pairs: int  # noisy training pairs DPO trains on (two disjoint ones from each of the first prompts, the same for every method)
    max_new_tokens: int
    rm: dict = field(default_factory=dict)
    diff: dict = field(default_factory=dict)
    align: dict = field(default_factory=dict)
    batch_size: int = 16  # generation and scoring
    pairing: str = "all"  # the training pairs of each prompt's candidates (pairs_of): scorers train on these
    diff_pairing: str | None = None  # the difference model's, a subset of those (its input holds both answers: 4 sequences a pair); None: the same
    bf16: bool = False  # mixed precision for training, bf16 weights for scoring and generation (fast on CPUs with AMX)


# Scorers, chosen on a validation split of the training prompts (`rdo demo --validation`), never on the
# held-out pairs; see docs/results.md for the table. Both read the mean of the response's hidden states
# (--pooling mean) from the *lower* layers of SmolLM2 (--backbone_layers: the rest are dropped): the gold
# reward is a word-level sentiment score, which a probe read better from the first 3-5 of 30 layers
# (0.71-0.72 validation accuracy) than from all 30 (0.65). The kept layers but the top one are frozen and
# their output computed once (--cache_frozen); every pair of a prompt's 4 answers trains both scorers.
# - reward model: the first 4 layers, the top one and the head trained, 3 epochs (validation 0.735);
# - difference model: the first 3 layers, the top one and the head trained, 3 epochs (validation 0.724).
# Policies: 72 pairs (the disjoint two of the first 36 prompts), 2 epochs at lr 2e-5, batch 4 (36 steps), chosen on
# validation among four regimes of about that cost as the one where DPO responds most to the label noise
# (DPO on the true labels - DPO on the noisy ones: +0.033; 48 pairs x 3 epochs at 1e-5 / 4e-5 / 1e-4: +0.046 with
# DPO - base's interval reaching 0, -0.169, +0.012), while DPO moves from the base model (+0.130).
_FIT = dict(per_device_train_batch_size=8, per_device_eval_batch_size=16, lr_scheduler_type="constant",
            logging_steps=24, cache_frozen=True, pooling="mean")
_RM = dict(_FIT, backbone_layers=4, train_top_layers=1, learning_rate=1e-4, head_learning_rate=1e-3, num_train_epochs=3)
_DIFF = dict(_FIT, backbone_layers=3, train_top_layers=1, learning_rate=1e-4, head_learning_rate=1e-3, num_train_epochs=3,
             beta0=0.01, beta1=0.01)
_ALIGN = dict(method="dpo", beta=0.1, learning_rate=2e-5, num_train_epochs=2, lr_scheduler_type="constant",
              per_device_train_batch_size=4, per_device_eval_batch_size=16, logging_steps=8)
PRESETS = {
    "smollm2": Preset(None, None, 72, 32, bf16=True, pairing="all",
                      rm=dict(_RM, max_length=112, max_prompt_length=64),
                      diff=dict(_DIFF, max_length=160, max_prompt_length=64),
                      align=dict(_ALIGN, max_length=112, max_prompt_length=64)),
    "tiny": Preset(12, 6, 12, 16, pairing="all", diff_pairing="disjoint",
                   rm=dict(_RM, max_length=256, max_prompt_length=96, backbone_layers=2, num_train_epochs=2),
                   diff=dict(_DIFF, max_length=448, max_prompt_length=96, backbone_layers=2, num_train_epochs=2),
                   align=dict(_ALIGN, max_length=256, max_prompt_length=96, learning_rate=1e-3, num_train_epochs=1)),
}
CPU = dict(use_cpu=True, report_to="none", disable_tqdm=False, save_strategy="no")
# name -> (its training pairs: scored by the reward model, by the difference model, or in the true order; α or None = --alpha)
METHODS = {"dpo": ("rm", 0.0), "dpo+rc (reward model)": ("rm", None), "dpo+rc (difference model)": ("diff", None),
           "dpo (true labels)": ("true", 0.0)}  # the same pairs, noise-free: what the wrong labels cost DPO


# --- 1. labels ---------------------------------------------------------------------------------

VALIDATION_PROMPTS = 48  # --validation: the last 48 of the 192 training prompts evaluate, the first 144 train


def _pair(row: dict, k: str, prompt: str, chosen: str, rejected: str, gold_c: float, gold_r: float, **extra) -> dict:
    # ids are unique per pair (rdo refuses duplicated ids); prompt_id groups a prompt's pairs
    return {"id": f"{row['id']}-{k}", "prompt_id": row["id"], "prompt": [{"role": "user", "content": prompt}],
            "chosen": [{"role": "assistant", "content": chosen}], "rejected": [{"role": "assistant", "content": rejected}],
            "gold_chosen": gold_c, "gold_rejected": gold_r, **extra}


PAIRINGS = ("all", "disjoint", "cycle")


def pairs_of(n: int, pairing: str) -> list[tuple[int, int]]:
    """Index pairs of n candidates: every pair (i < j), the disjoint (0, 1), (2, 3), ..., or the cycle
    (0, 1), (1, 2), ..., (n-1, 0) (every answer in two pairs)."""
    if pairing == "all":
        return [(i, j) for i in range(n) for j in range(i + 1, n)]
    if pairing == "disjoint":
        return [(i, i + 1) for i in range(0, n - 1, 2)]
    if pairing == "cycle":
        return [(i, (i + 1) % n) for i in range(n if n > 2 else 1)]
    raise ValueError(f"pairing {pairing!r}: expected one of {PAIRINGS}")


def make_pairs(rows: list[dict], preset: Preset, tau: float, seed: int, validation: bool = False) -> tuple[dict[str, list[dict]], dict]:
    """Noisy training pairs, DPO's subset of them, and evaluation pairs ordered by the gold reward.

    Training: the pairs `preset.pairing` makes of each prompt's distinct candidates, labelled by one
    Bradley-Terry draw each; the difference model trains on those of `preset.diff_pairing`. DPO: the
    disjoint pairs (0, 1), (2, 3) of the first prompts, selected by id (so DPO sees each of those
    prompts' answers once, with the labels the scorers saw). Evaluation: the
    held-out prompts' cycle (0, 1), (1, 2), (2, 3), (3, 0) (every answer in two pairs), chosen = the one
    with the higher gold reward (the noise-free preference); gold ties have no true order and are
    counted, not used. `validation`: the held-out prompts are not read; the last `VALIDATION_PROMPTS`
    training prompts take their place (every pair of theirs), the others train.
    """
    from rdo.demo.task import bt_label, p_wrong, vader_reward

    rng = random.Random(seed)
    train = [r for r in rows if r["split"] == "train"]
    if validation:
        train, test = train[:-VALIDATION_PROMPTS], train[-VALIDATION_PROMPTS:]
    else:
        test = [r for r in rows if r["split"] == "test"]
    train, test = train[: preset.train_prompts], test[: preset.test_prompts]
    stats = {"label_noise_tau": tau, "train_prompts": len(train), "test_prompts": len(test), "validation": validation,
             "pairing": preset.pairing, "identical_skipped": 0, "gold_ties_train": 0, "wrong_labels": 0, "expected_wrong": 0.0,
             "gold_ties_test": 0}
    pairs, dpo_ids, diff_ids = [], [], set()
    for r in train:
        ys = list(dict.fromkeys(r["responses"]))  # distinct answers, first-seen order
        stats["identical_skipped"] += len(r["responses"]) - len(ys)
        disjoint = set(pairs_of(len(ys), "disjoint"))
        for_diff = set(pairs_of(len(ys), preset.diff_pairing or preset.pairing))
        for i, j in pairs_of(len(ys), preset.pairing):
            a, b = ys[i], ys[j]
            ga, gb = vader_reward(r["prompt"], a), vader_reward(r["prompt"], b)
            a_wins = bt_label(ga, gb, tau, rng)
            (c, gc), (w, gw) = ((a, ga), (b, gb)) if a_wins else ((b, gb), (a, ga))
            stats["gold_ties_train"] += ga == gb
            stats["wrong_labels"] += gc < gw
            stats["expected_wrong"] += p_wrong(ga, gb, tau) if ga != gb else 0.0
            pairs.append(_pair(r, f"{i}{j}", r["prompt"], c, w, gc, gw, label_wrong=gc < gw))
            if (i, j) in disjoint:
                dpo_ids.append(pairs[-1]["id"])
            if (i, j) in for_diff:
                diff_ids.add(pairs[-1]["id"])
    dpo_ids = set(dpo_ids[: preset.dpo_pairs])
    heldout = []
    for r in test:
        ys = list(dict.fromkeys(r["responses"]))
        for i, j in pairs_of(len(ys), "all" if validation else "cycle"):
            gi, gj = vader_reward(r["prompt"], ys[i]), vader_reward(r["prompt"], ys[j])
            if gi == gj:
                stats["gold_ties_test"] += 1
                continue
            (c, gc), (w, gw) = ((ys[i], gi), (ys[j], gj)) if gi > gj else ((ys[j], gj), (ys[i], gi))
            heldout.append(_pair(r, f"{i}{j}", r["prompt"], c, w, gc, gw))
    untied = len(pairs) - stats["gold_ties_train"]
    stats |= {"train_pairs": len(pairs), "diff_pairs": len(diff_ids), "dpo_pairs": len(dpo_ids), "heldout_pairs": len(heldout),
              "wrong_label_share": stats["wrong_labels"] / untied if untied else None,
              "expected_wrong_share": stats["expected_wrong"] / untied if untied else None}
    return {"scorer_train": pairs, "diff_train": [q for q in pairs if q["id"] in diff_ids],
            "dpo_train": [q for q in pairs if q["id"] in dpo_ids],
            "dpo_true": [true_order(q) for q in pairs if q["id"] in dpo_ids], "heldout_true": heldout,
            "test_prompts": [{"id": r["id"], "prompt": r["prompt"]} for r in test]}, stats


def true_order(pair: dict) -> dict:
    """The pair with chosen and rejected in the gold order (a gold tie keeps its drawn label: it has no true order)."""
    if not pair["label_wrong"]:
        return pair
    return dict(pair, chosen=pair["rejected"], rejected=pair["chosen"], gold_chosen=pair["gold_rejected"],
                gold_rejected=pair["gold_chosen"], label_wrong=False)


def rows_with_ids(path: Path, ids: set[str]) -> list[str]:
    """The lines of a jsonl file whose row id is in `ids` (DPO's pairs out of a file scored for all pairs)."""
    lines = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["id"] in ids]
    if len(lines) != len(ids):
        raise ValueError(f"{path}: expected the {len(ids)} rows of DPO's pairs, found {len(lines)}")
    return lines


# --- 6-7. generation and the gold reward: `rdo generate` and `rdo eval reward --reward_fn` ---------

GOLD = "rdo.demo.task:vader_reward"


def greedy_answers(model_dir: str | Path, prompts_file: Path, out: Path, max_new_tokens: int, batch_size: int,
                   torch_dtype: str = "float32") -> Path:
    """`rdo generate`: greedy answers of one model to the held-out prompts (each sent as one user turn)."""
    from rdo.config import GenerateConfig
    from rdo.evaluate.generate import generate_command

    generate_command(GenerateConfig(model_name_or_path=str(model_dir), dataset_name=str(prompts_file), dataset_split="train",
                                    output=str(out), max_new_tokens=max_new_tokens, batch_size=batch_size,
                                    chat_text_prompts=True, device="cpu", torch_dtype=torch_dtype, overwrite=True))
    return out


def gold_rewards(files: dict[str, Path], baseline: str, resamples: int = 2000, seed: int = 0, output: Path | None = None) -> dict:
    """`rdo eval reward --reward_fn rdo.demo.task:vader_reward` over every model's answers; the paired
    comparisons are turned to read "model minus `baseline`" (reward.json format, names = the keys of `files`)."""
    from rdo.config import EvalRewardConfig
    from rdo.evaluate.reward import eval_reward

    stems = {Path(p).stem: name for name, p in files.items()}
    if len(stems) != len(files):
        raise ValueError(f"generations files need distinct names: {sorted(map(str, files.values()))}")
    res = eval_reward(EvalRewardConfig(generations=[str(p) for p in files.values()], reward_fn=[GOLD], bootstrap=resamples,
                                       seed=seed, output=str(output) if output else None))
    for r in (*res["files"], *res["rewards"]):
        r["name"] = stems[r["name"]]
    paired = []
    for d in res["paired"]:
        d["a"], d["b"] = stems[d["a"]], stems[d["b"]]
        if d["a"] == baseline:  # flip to "other minus baseline"
            lo, hi = d["ci95"] or (None, None)
            d = dict(d, a=d["b"], b=d["a"], mean_diff=-d["mean_diff"], ci95=None if lo is None else [-hi, -lo],
                     frac_a_higher=d["frac_b_higher"], frac_b_higher=d["frac_a_higher"])
        if d["b"] == baseline:
            paired.append(d)
    res["paired"] = paired
    return res


# --- the stages --------------------------------------------------------------------------------

def model_for(preset_name: str, out: Path) -> Path:
    """SmolLM2 converted from the shipped GGUF, or a tiny 2-layer Llama built locally (seeded)."""
    if preset_name == "tiny":
        from rdo.tiny import build_tiny_model

        return build_tiny_model(out / "tiny-model", seed=0)
    from rdo.demo.smollm import smollm2_dir

    return smollm2_dir()


def run_demo(cfg: DemoConfig) -> dict:
    from rdo.train.align import align
    from rdo.config import AlignConfig, EvalAccuracyConfig, ScoreConfig, TrainDiffConfig, TrainRMConfig
    from rdo.demo.candidates import CANDIDATES, load_candidates, regenerate
    from rdo.evaluate.accuracy import eval_accuracy
    from rdo.score.scoring import score
    from rdo.score.training import train_diff, train_rm

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    sizes = {k: getattr(cfg, k) for k in ("train_prompts", "test_prompts", "dpo_pairs") if getattr(cfg, k) is not None}
    preset = with_recipe(dataclasses.replace(PRESETS[cfg.preset], **sizes), json.loads(cfg.recipe) if cfg.recipe else {})
    model = model_for(cfg.preset, out)
    if cfg.regenerate_data:
        return regenerate(model, cfg.candidates or CANDIDATES)

    p = {k: out / f"data/{k}.jsonl" for k in ("scorer_train", "diff_train", "dpo_train", "dpo_true", "heldout_true", "test_prompts")}
    common = dict(model_name_or_path=str(model), seed=cfg.seed, **CPU)
    bf16 = preset.bf16 and native_bf16()
    if preset.bf16 and not bf16:
        log.warning("this CPU has no native bf16 (AMX / AVX512-BF16): running in float32, slower and with other numbers")
    scorer_common = dict(common, bf16=bf16)
    scorer_data = {"rm": p["scorer_train"], "diff": p["diff_train"]}
    weights = "bfloat16" if bf16 else "float32"  # scoring and generation
    results: dict = {}

    def data():
        splits, stats = make_pairs(load_candidates(cfg.candidates or CANDIDATES), preset, cfg.label_noise, cfg.seed, cfg.validation)
        for k, rows in splits.items():
            atomic.write_jsonl(p[k], rows)
        return stats

    def scorer_stage(kind: str):
        def run():
            train, config = (train_rm, TrainRMConfig) if kind == "rm" else (train_diff, TrainDiffConfig)
            train(config(output_dir=str(out / kind), dataset_name=str(scorer_data[kind]), **scorer_common, **getattr(preset, kind)))
            return eval_accuracy(EvalAccuracyConfig(scorer=str(out / kind), dataset_name=str(p["heldout_true"]),
                                                    output=str(out / f"{kind}_accuracy.json"), bootstrap=2000, seed=cfg.seed,
                                                    num_bins=3, device="cpu", batch_size=preset.batch_size, torch_dtype=weights))
        return run

    def score_stage(kind: str):
        def run():
            # Without cross-fitting only DPO's pairs are scored, in-sample (as in the paper). With --folds K all
            # scorer pairs are scored by K scorers each trained on the other folds, and DPO's pairs kept.
            scored = out / f"data/scored_{kind}.jsonl"
            shutil.rmtree(scored.with_name(scored.name + ".folds"), ignore_errors=True)  # `rdo score` reuses fold models found there
            source = p["dpo_train"] if cfg.folds == 1 else scorer_data[kind]
            result = score(ScoreConfig(scorer=str(out / kind), dataset_name=str(source), output=str(scored), folds=cfg.folds,
                                       seed=cfg.seed, device="cpu", overwrite=True, batch_size=preset.batch_size, dup_check_rows=0, torch_dtype=weights))
            if cfg.folds > 1:  # keep DPO's pairs, found by id
                dpo_ids = {json.loads(line)["id"] for line in p["dpo_train"].read_text().splitlines() if line.strip()}
                atomic.write_text(scored, "\n".join(rows_with_ids(scored, dpo_ids)) + "\n")
            return result
        return run

    def align_stage(name: str, kind: str, alpha: float | None):
        def run():
            data = p["dpo_true"] if kind == "true" else out / f"data/scored_{kind}.jsonl"
            return align(AlignConfig(dataset_name=str(data), output_dir=str(out / slug(name)),
                                     alpha=cfg.alpha if alpha is None else alpha, ref_cache_dir=str(out / "ref_cache"),
                                     bf16=bf16, **common, **preset.align))["data"]["coefficients"]
        return run

    def generate_stage():
        models = {"base": model, **{name: out / slug(name) for name in METHODS}}
        return {name: str(greedy_answers(path, p["test_prompts"], out / f"generations/{slug(name)}.jsonl", preset.max_new_tokens,
                                         preset.batch_size, weights)) for name, path in models.items()}

    def gold_stage():
        return gold_rewards({n: Path(f) for n, f in results["generate"].items()}, baseline="dpo", seed=cfg.seed,
                            output=out / "reward.json")

    stages = [("data", data), ("train-rm", scorer_stage("rm")), ("train-diff", scorer_stage("diff")),
              ("score rm", score_stage("rm")), ("score diff", score_stage("diff")),
              *[(f"align {name}", align_stage(name, kind, alpha)) for name, (kind, alpha) in METHODS.items()],
              ("generate", generate_stage), ("gold", gold_stage)]
    if cfg.stop_after:  # "score" / "align" stop after every stage of that family
        last = max(i for i, (name, _) in enumerate(stages) if name.split(" ")[0] == cfg.stop_after)
        stages = stages[: last + 1]
    seconds, cpu_seconds, start = {}, {}, time.time()
    for i, (name, fn) in enumerate(stages, 1):
        log.info("stage %d/%d: %s", i, len(stages), name)
        t, c = time.time(), time.process_time()
        results[name] = fn()
        seconds[name], cpu_seconds[name] = round(time.time() - t, 1), round(time.process_time() - c, 1)
    report = {"preset": cfg.preset, "precision": "bf16" if bf16 else "fp32", "cpu": cpu_name(), "seed": cfg.seed,
              "validation": cfg.validation, "recipe": json.loads(cfg.recipe) if cfg.recipe else None, "label_noise": cfg.label_noise, "alpha": cfg.alpha, "folds": cfg.folds,
              "labels": results["data"],
              "accuracy": {k: _accuracy(results[f"train-{k}"]) for k in ("rm", "diff") if f"train-{k}" in results},
              "train_R": {k: r_agreement(out / f"data/scored_{k}.jsonl") for k in ("rm", "diff") if f"score {k}" in results},
              "coefficients": {n: results[f"align {n}"] for n in METHODS if f"align {n}" in results},
              "gold": results.get("gold"), "seconds": seconds,
              "cpu_seconds": cpu_seconds,  # this process's CPU time: on a busy machine the load-independent cost
              "threads": torch_threads(), "minutes": round((time.time() - start) / 60, 2)}
    atomic.write_json(out / "report.json", report)
    table = format_report(report)
    atomic.write_text(out / "table.md", table + "\n")
    print("\n" + table)
    return report


def with_recipe(preset: Preset, recipe: dict) -> Preset:
    """The preset with `--recipe` overrides: {"rm": {...}, "diff": {...}, "align": {...}} update those
    commands' settings, any other key a preset field (e.g. "dpo_pairs", "pairing")."""
    changes = {}
    for key, value in recipe.items():
        if key not in {f.name for f in dataclasses.fields(Preset)}:
            raise ValueError(f"--recipe: {key!r} is not a preset field ({', '.join(f.name for f in dataclasses.fields(Preset))})")
        changes[key] = {**getattr(preset, key), **value} if key in ("rm", "diff", "align") else value
    for key in ("pairing", "diff_pairing"):
        if changes.get(key, getattr(preset, key)) not in (*PAIRINGS, None):
            raise ValueError(f"--recipe: {key} {changes[key]!r}: expected one of {PAIRINGS}")
    return dataclasses.replace(preset, **changes)


def native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AMX or AVX512-BF16): there the demo's forward passes run
    2.5x faster than in fp32 (measured on SmolLM2); elsewhere bf16 is emulated and slower than fp32."""
    import torch

    checks = (getattr(torch.cpu, "_is_amx_tile_supported", None), getattr(torch.cpu, "_is_avx512_bf16_supported", None))
    return any(check is not None and check() for check in checks)


def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo; else the platform's word): bf16 kernels, and so the numbers, differ by CPU."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def r_agreement(scored: Path) -> dict:
    """How often the sign of R on DPO's pairs agrees with the true (gold) order and with the noisy label."""
    rows = [json.loads(line) for line in scored.read_text().splitlines()]
    untied = [r for r in rows if r["gold_chosen"] != r["gold_rejected"]]
    true = sum((r["rdo_reward_diff"] > 0) == (r["gold_chosen"] > r["gold_rejected"]) for r in untied)
    return {"n": len(rows), "true_order_agreement": true / len(untied) if untied else None,
            "label_agreement": sum(r["rdo_reward_diff"] > 0 for r in rows) / len(rows)}


def slug(name: str) -> str:
    return name.replace("+", "_").replace(" (", "_").replace(")", "").replace(" ", "_")


def _accuracy(m: dict) -> dict:
    keys = ("accuracy", "ci95", "n_pairs", "ties", "bins", "accuracy_single_pass", "position_consistency")
    return {k: m[k] for k in keys if k in m}


# --- the table ---------------------------------------------------------------------------------

def verdict(ci: list[float] | None) -> str:
    if ci is None:
        return "no interval"
    if ci[0] > 0:
        return "higher (interval above 0)"
    if ci[1] < 0:
        return "lower (interval below 0)"
    return "no detectable difference (interval includes 0)"


def format_report(r: dict) -> str:
    lab = r["labels"]
    share = lambda v: "n/a" if v is None else f"{v:.1%}"  # noqa: E731
    held = "validation" if r.get("validation") else "held-out"
    diff_pairs = f" (the difference model on {lab['diff_pairs']} of them)" if lab.get("diff_pairs", lab["train_pairs"]) != lab["train_pairs"] else ""
    lines = [
        f"RDO demo ({r['preset']}, seed {r['seed']}{', VALIDATION run' if r.get('validation') else ''}): "
        f"{lab['train_pairs']} noisy training pairs from {lab['train_prompts']} prompts{diff_pairs} "
        f"(label noise tau = {r['label_noise']}: {share(lab['wrong_label_share'])} of the labels are wrong, "
        f"{share(lab['expected_wrong_share'])} expected; {lab['gold_ties_train']} gold ties), DPO on {lab['dpo_pairs']} of them "
        f"(two disjoint pairs from each of the first prompts); {lab['test_prompts']} {held} prompts, "
        f"{lab['heldout_pairs']} {held} pairs ordered by the gold reward.",
        f"Ran on: {r.get('cpu', 'unknown CPU')}, {r.get('precision', 'fp32')}, {r['threads']} torch threads "
        "(bf16 kernels differ across CPUs: another CPU kind gives other numbers for the same seed)."
        + (f" Recipe overrides: {json.dumps(r['recipe'])}" if r.get("recipe") else ""),
        "",
        f"Scorer accuracy against the true (noise-free) preference on the {held} pairs (cf. the paper's Table 4):",
        "",
        "| scorer | accuracy | 95% CI | pairs | above chance? |",
        "|---|---|---|---|---|",
    ]
    for kind, label in (("rm", "reward model (`rdo train-rm`)"), ("diff", "difference model (`rdo train-diff`, symmetrised)")):
        if kind not in r["accuracy"]:
            continue
        a = r["accuracy"][kind]
        ci = a["ci95"]
        above = "yes" if ci and ci[0] > 0.5 else "no (interval reaches 0.5)" if ci else "n/a"
        lines.append(f"| {label} | {a['accuracy']:.3f} | [{ci[0]:.3f}, {ci[1]:.3f}] | {a['n_pairs']} | {above} |")
    if r["train_R"]:
        lines += ["", f"Sign of R on DPO's {lab['dpo_pairs']} training pairs ({'cross-fitted, ' + str(r['folds']) + ' folds' if r['folds'] > 1 else 'in-sample'}): "
                  + "; ".join(f"{k}: agrees with the true order {share(v['true_order_agreement'])}, with the noisy label {share(v['label_agreement'])}"
                              for k, v in r["train_R"].items())]
    gold = r["gold"]
    if gold is None:
        return "\n".join(lines + ["", f"(stopped after {list(r['seconds'])[-1]}) Stage times (s): " + ", ".join(f"{k} {v}" for k, v in r["seconds"].items())])
    paired = {d["a"]: d for d in gold["paired"]}
    lines += ["", f"Mean gold reward (VADER) of greedy answers to the {lab['test_prompts']} {held} prompts (cf. the paper's Table 1; "
              f"α = {r['alpha']}{', cross-fitted scores' if r['folds'] > 1 else ''}):", "",
              "| model | mean gold reward | 95% CI | vs DPO: mean diff | 95% CI | MDE | reading |", "|---|---|---|---|---|---|---|"]
    for w in gold["rewards"]:
        d = paired.get(w["name"])
        diff = (f"{d['mean_diff']:+.3f} | [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}] | {d['mde']:.3f} | {verdict(d['ci95'])}" if d
                else "— | — | — | (baseline)")
        lines.append(f"| {w['name']} | {w['mean']:+.3f} | [{w['ci95'][0]:+.3f}, {w['ci95'][1]:+.3f}] | {diff} |")
    lines += ["", "dpo (true labels): DPO on the same pairs with every wrong label corrected (not available to a real user): "
              "its difference from DPO is what the label noise costs DPO in this run, the gap R^α is meant to close."]
    lines += ["", "MDE: the smallest true difference from DPO that this comparison detects with 80% power at the 5% level "
              "(2.80 x the bootstrap standard error over prompts); a difference below it can go unseen."]
    lines += ["", "Stage times (s): " + ", ".join(f"{k} {v}" for k, v in r["seconds"].items()) + f"; total {r['minutes']} min wall, "
              f"{sum(r['cpu_seconds'].values()) / 60:.1f} min CPU ({r['threads']} torch threads, {r.get('precision', 'fp32')})."]
    return "\n".join(lines)
