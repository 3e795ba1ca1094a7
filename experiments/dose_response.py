"""When does RDO help? A dose-response study: DPO+rc against DPO as the scorer's accuracy grows.

    PYTHONPATH=src python experiments/dose_response.py --out runs/dose_response

The demo's task (rdo.demo.task): SmolLM2-135M-Instruct answers shipped in src/rdo/demo/data/candidates.jsonl,
gold reward = VADER sentiment, training labels drawn from a Bradley-Terry model of it at temperature tau.
The learned scorer is replaced by an *oracle of controlled accuracy* (rdo.demo.oracle): R = the gold gap
plus Gaussian noise calibrated so that the sign of R agrees with the true preference on 50%, 70%, 85% or
100% of the training pairs. R is written as the `rdo_reward_diff` column and read by `rdo align`'s own
data path (rdo.train.align.prepare_features: the same R^alpha weights, clip and mean normalisation).

Training is rdo's trainer (RDOTrainer: the DPO loss and the one weighted reduction, reference log-probs
from `rdo align`'s content-keyed cache) on the policy's top `--top_layers` block(s) only:
- the lower blocks are frozen and their output computed once per sequence and replayed
  (rdo.score.frozen_cache, the scorers' --cache_frozen; checked against the plain forward);
- the softmax is restricted to the task's vocabulary (every token of every prompt and candidate:
  ~5k of 49k), so the LM head costs a tenth; log-probs are the model's renormalised over it.
`rdo align` has neither option, and a full SmolLM2 step costs ~3 s per 8 pairs on 2 idle cores (far
more on a shared machine): the grid (90-180 trainings) would take many hours.

Evaluation (no generation): the candidates of each held-out prompt were sampled from SmolLM2 itself
(temperature 1), so the policy's expected gold reward on its own answers is estimated by self-normalised
importance sampling: a softmax over the candidates of log pi(y) - log pi_base(y), times their gold
reward (`policy_value`). The base model scores the plain mean of its candidates; with 4 samples per
prompt the estimate cannot exceed the best of them, so it measures how the policy *reweights fixed
candidates*, a proxy for free generation, not free generation itself. Differences are paired by prompt
and seed (same prompts, candidates, labels and oracle noise per seed); intervals resample seeds and
prompts (rdo.evaluate.stats.two_way_bootstrap) and each comparison carries its minimum detectable
effect (MDE, 80% power at 5%).

Splits, by subject (no subject in two roles): 16 training-split subjects give the training pairs (64
prompts x 2 disjoint pairs = 128), 8 give validation prompts (the regimes are chosen there only), and
the other 24 training-split subjects join the demo's 16 held-out subjects as held-out prompts (160).

The other uses of R (`--methods`): besides R^alpha weights (dpo_rc), rdo has methods that read R
inside the loss (rdo.core.methods.reward_aware): odpo (offset s*log(1+max(R,0))), mmpo (soft label
sigmoid(gamma*R)) and rpo (beta*h fitted to eta*R; the `sq` variant, since bwd_kl has MMPO's gradients).
Each trains at alpha 0 at every oracle accuracy on the same pairs, labels and order as DPO, R from the
same `rdo_reward_diff` column, the same untrained policy as reference. Their one hyperparameter is
chosen on the validation prompts only, like the regimes (see `methods` below). The default, dpo_rc
alone, is the study as first run: its stage keys are unchanged.

Regimes: one training of max(--epochs) epochs at a constant learning rate per policy, evaluated after
each epoch budget in --epochs (epoch 1 of a 3-epoch run at a constant rate is the 1-epoch run): light
= the short budget, strong = the long one, at the learning rate among --lrs with the best DPO value on
the validation prompts (labels of --regime_seed, the noisier level).

Stages, each skipped when its key (a digest of its settings and the bytes of its inputs) is unchanged
and its output is there, so a killed study continues where it stopped:
  data     per (tau, seed): noisy pairs and one file per oracle accuracy, R in `rdo_reward_diff`
  base     the untrained policy's candidate log-probs (frozen_states.pt: the frozen blocks' output)
  regimes  DPO on the validation prompts for each learning rate in --lrs
  methods  each method of --methods that reads R in its loss, once per value of its hyperparameter, at
           the regimes' learning rate, oracle accuracy 0.85 (labels of --regime_seed, the noisier level):
           the value with the best validation value after the strong budget is used (methods.json)
  run      one training per (tau, seed, policy), evaluated at each epoch budget
  report   table (study.md, study.json) and figure (always redone, cheap)
With `--worker K N`, N processes (one thread each) share the regime runs and the grid.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("dose_response")

VERSION = 1  # part of every stage key: bump when a stage's code changes what it computes


@dataclass(frozen=True)
class Study:
    """Every setting that changes a number; each stage's key holds the ones it depends on."""

    noise: tuple[float, ...] = (0.1, 0.3)  # label-noise temperatures: ~11% and ~24% of the training labels wrong
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    accuracies: tuple[float, ...] = (0.5, 0.7, 0.85, 1.0)
    alphas: tuple[float, ...] = (0.5, 1.0)
    epochs: tuple[int, ...] = (1, 3)  # the light and the strong regime's epoch budgets
    lrs: tuple[float, ...] = (3e-5, 1e-4, 3e-4)  # DPO's learning rate is chosen among these on validation
    regime_seed: int = 100  # labels and order of the regime search: not one of the study's seeds
    pairs: int = 128
    top_layers: int = 1
    batch_size: int = 8
    beta: float = 0.1
    max_length: int = 112
    max_prompt_length: int = 64
    bf16: bool = True  # mixed precision where the CPU has native bf16 (else fp32: see `precision`)
    methods: tuple[str, ...] = ("dpo_rc",)  # the policies trained beside DPO: dpo_rc (R^alpha weights) and/or odpo, mmpo, rpo
    tune_accuracy: float = 0.85  # the oracle accuracy at which odpo/mmpo/rpo's hyperparameter is chosen (validation)
    # Each grid spans R's scale (median |R| ~0.4, 90% below ~1 on the VADER gap) against the sigmoid's unit scale
    # of beta*h (beta = 0.1): at the median R, s*log(1+R), gamma*R and eta*R are ~0.3-0.4 (a small push),
    # ~1-1.2 and ~3.4-4 (near-hard labels; an offset or target past where log sigmoid saturates).
    odpo_offset_scales: tuple[float, ...] = (1.0, 3.0, 10.0)  # ODPO's s
    mmpo_gammas: tuple[float, ...] = (1.0, 3.0, 10.0)  # MMPO's gamma
    rpo_etas: tuple[float, ...] = (1.0, 3.0, 10.0)  # RPO's eta
    rpo_variant: str = "sq"  # squared distance: bwd_kl has MMPO's gradients (rdo.core.losses.rpo_loss), so it would repeat MMPO

    def __post_init__(self):
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"--methods {' '.join(self.methods)}: choose one or more of {' '.join(METHODS)}")
        if any(m in TUNED for m in self.methods) and self.tune_accuracy not in self.accuracies:
            raise ValueError(f"tune_accuracy {self.tune_accuracy} must be one of the oracle accuracies {self.accuracies}")


# The methods that read R inside the loss: the AlignConfig field of the one hyperparameter chosen on validation
# and the Study field holding its candidates. dpo_rc (R as the weight R^alpha) has no such field.
TUNED = {"odpo": ("odpo_offset_scale", "odpo_offset_scales"), "mmpo": ("mmpo_gamma", "mmpo_gammas"), "rpo": ("rpo_eta", "rpo_etas")}
METHODS = ("dpo_rc", *TUNED)
SYMBOL = {"odpo_offset_scale": "s", "mmpo_gamma": "γ", "rpo_eta": "η"}


def method_options(study: Study, method: str, value: float) -> dict:
    """The AlignConfig options of `method` with its tuned hyperparameter at `value` (rpo: plus the variant)."""
    field, _ = TUNED[method]
    return {field: value} | ({"rpo_variant": study.rpo_variant} if method == "rpo" else {})


def candidates(study: Study, method: str) -> tuple[float, ...]:
    """The values of `method`'s hyperparameter tried on validation."""
    return getattr(study, TUNED[method][1])


def digest_of(*parts) -> str:
    from rdo.utils.fingerprint import digest

    return digest([VERSION, *parts])


def stage(path: Path, key: dict, fn, outputs: tuple[Path, ...] = ()) -> dict:
    """Run `fn` unless `path` holds a result made under the same key (and `outputs` exist); return the result.

    The key is a digest of `key` (settings and input digests), never a path or a file's existence,
    so a changed setting or input redoes the stage and an unchanged one is read back.
    """
    from rdo.utils import atomic

    done = finished(path, key, outputs)
    if done is not None:
        log.info("%s: unchanged, skipped", path)
        return done
    if path.exists():
        log.info("%s: settings or inputs changed, redoing", path)
    start = time.time()
    result = fn()
    atomic.write_json(path, {"key": digest_of(key), "seconds": round(time.time() - start, 1), "result": result})
    return json.loads(path.read_text())["result"]  # as a rerun reads it back (JSON: string keys)


def finished(path: Path, key: dict, outputs: tuple[Path, ...] = ()) -> dict | None:
    """The result `stage` wrote at `path` under this very key (with its `outputs` there), else None."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return old["result"] if old.get("key") == digest_of(key) and all(p.exists() for p in outputs) else None


# --- data ----------------------------------------------------------------------------------------

def roles(rows: list[dict]) -> dict[str, str]:
    """Prompt id -> "train" / "valid" / "heldout", by subject (see the module docstring)."""
    train_subjects = list(dict.fromkeys(r["subject"] for r in rows if r["split"] == "train"))
    role = {s: ("train", "train", "valid", "heldout", "heldout", "heldout")[i % 6] for i, s in enumerate(train_subjects)}
    return {r["id"]: role.get(r["subject"], "heldout") for r in rows}


def make_data(study: Study, rows: list[dict], tau: float, seed: int, folder: Path) -> dict:
    """Noisy pairs (the demo's make_pairs) and, per oracle accuracy, the same pairs with R = oracle(gap)."""
    from rdo.demo.oracle import oracle_diffs
    from rdo.demo.pipeline import PRESETS, make_pairs
    from rdo.utils import atomic

    role = roles(rows)
    train_rows = [dict(r, split="train") for r in rows if role[r["id"]] == "train"]
    preset = dataclasses.replace(PRESETS["smollm2"], train_prompts=None, test_prompts=0, dpo_pairs=study.pairs)
    splits, stats = make_pairs(train_rows, preset, tau, seed)
    pairs = splits["dpo_train"]
    gaps = [p["gold_chosen"] - p["gold_rejected"] for p in pairs]
    oracles = {}
    for acc in study.accuracies:
        r, info = oracle_diffs(gaps, acc, seed=10_000 + seed)  # one noise draw per seed, shared by the accuracies
        atomic.write_jsonl(folder / f"acc{acc}.jsonl", [dict(p, rdo_reward_diff=x) for p, x in zip(pairs, r)])
        oracles[str(acc)] = info
    return {"labels": {k: stats[k] for k in ("train_prompts", "train_pairs", "dpo_pairs", "wrong_label_share", "gold_ties_train")}
            | {"wrong_in_dpo_pairs": sum(p["label_wrong"] for p in pairs) / len(pairs)}, "oracle": oracles}


def eval_rows(rows: list[dict], which: str) -> tuple[list[dict], dict]:
    """Pair rows that hold every distinct candidate of each `which` prompt once (as chosen or rejected),
    and {prompt id: [gold of each distinct candidate]}; a row's `cands` names its two candidates."""
    from rdo.demo.task import vader_reward

    role = roles(rows)
    out, gold = [], {}
    for r in rows:
        if role[r["id"]] != which:
            continue
        ys = list(dict.fromkeys(r["responses"]))
        if len(ys) < 2:
            continue  # one distinct answer: nothing to rerank
        gold[r["id"]] = [vader_reward(r["prompt"], y) for y in ys]
        idx = list(range(len(ys))) + ([0] if len(ys) % 2 else [])
        for k in range(0, len(idx), 2):
            i, j = idx[k], idx[k + 1]
            out.append({"id": f"{r['id']}-e{k // 2}", "prompt": [{"role": "user", "content": r["prompt"]}],
                        "chosen": [{"role": "assistant", "content": ys[i]}], "rejected": [{"role": "assistant", "content": ys[j]}],
                        "prompt_id": r["id"], "cands": [i, j]})
    return out, gold


# --- the policy: rdo's trainer on the top blocks, the lower ones replayed ------------------------------

class Engine:
    """One SmolLM2 whose lower blocks run once per sequence (FrozenCache); `reset` restores the initial top blocks.

    The softmax is restricted to the task's vocabulary (every token of every prompt and candidate, plus
    the special ones): the (tied) embedding and LM head keep those rows only and token ids are mapped
    onto them, so the LM head costs V = a few thousand instead of 49,152 per position. Log-probs are
    then the model's renormalised over that vocabulary (the same for base, DPO and DPO+rc).
    """

    def __init__(self, study: Study, model_dir: str, out: Path, vocab_source: Path):
        import torch

        from rdo.core.methods import get_method
        from rdo.models import load_tokenizer
        from rdo.score.frozen_cache import FrozenCache
        from rdo.score.scorers import train_only_top
        from rdo.train.align import load_model, prepare_features

        self.torch = torch
        self.study, self.model_dir, self.out = study, model_dir, out
        self.method = get_method("dpo")  # the evaluation's pairs and log-probs; each training takes its own (cfg.method)
        self.tokenizer = load_tokenizer(model_dir)
        tok = self.tokenizer
        cfg0 = self.config(vocab_source, out / "scratch", alpha=0.0, lr=1e-5, epochs=1, seed=0)
        feats, _ = prepare_features(cfg0, self.method, tok, weighted=False)
        used = {i for f in feats for k in ("prompt_ids", "chosen_ids", "rejected_ids") for i in f[k]}
        used |= {i for i in (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id) if i is not None}
        self.keep = sorted(used)
        self.index = {old: new for new, old in enumerate(self.keep)}
        self.pad_id = self.index[tok.pad_token_id]
        self.collator = self.method.make_collator(self.pad_id, 1)

        self.model = load_model(cfg0, model_dir)  # dropout off (rdo align's default)
        emb = self.model.get_input_embeddings()
        small = torch.nn.Embedding(len(self.keep), emb.weight.shape[1])
        small.weight.data = emb.weight.data[torch.tensor(self.keep)].clone()
        head = torch.nn.Linear(emb.weight.shape[1], len(self.keep), bias=False)
        head.weight = small.weight  # tied, as in SmolLM2
        self.model.set_input_embeddings(small)
        self.model.set_output_embeddings(head)
        self.model.config.vocab_size = len(self.keep)
        n, total = train_only_top(self.model, study.top_layers)  # embeddings (and so the tied head) frozen
        self.cache = FrozenCache(self.model, total - n, self.pad_id)
        self.initial = {k: p.detach().clone() for k, p in self.model.named_parameters() if p.requires_grad}
        self.verified = False
        self.prefill([f["prompt_ids"] + f[k] for f in feats for k in ("chosen_ids", "rejected_ids")], cfg0)
        log.info("policy: top %d of %d blocks trained (%d parameters), vocabulary %d of %d tokens", n, total,
                 sum(p.numel() for p in self.initial.values()), len(self.keep), emb.weight.shape[0])

    def config(self, data: Path, output_dir: Path, *, alpha: float, lr: float, epochs: int, seed: int,
               method: str = "dpo", options: dict | None = None):
        """The AlignConfig a user would pass to `rdo align` for this run (`options`: the method's own, e.g. mmpo_gamma)."""
        from rdo.config import AlignConfig

        s = self.study
        return AlignConfig(model_name_or_path=self.model_dir, dataset_name=str(data), output_dir=str(output_dir), method=method, **(options or {}),
                           alpha=alpha, beta=s.beta, learning_rate=lr, num_train_epochs=epochs, lr_scheduler_type="constant",
                           warmup_steps=0, per_device_train_batch_size=s.batch_size, per_device_eval_batch_size=32, seed=seed,
                           max_length=s.max_length, max_prompt_length=s.max_prompt_length, bf16=s.bf16, use_cpu=True,
                           report_to="none", save_strategy="no", disable_tqdm=True, logging_steps=8,
                           ref_cache_dir=str(self.out / "ref_cache"))

    def features(self, cfg, weighted: bool = True) -> tuple[list[dict], dict]:
        """`rdo align`'s features for `cfg.method` (same tokens, same weights, R as `reward_diff` for a method
        that reads it), ids mapped onto the restricted vocabulary."""
        from rdo.core.methods import get_method
        from rdo.train.align import prepare_features

        feats, report = prepare_features(cfg, get_method(cfg.method), self.tokenizer, weighted=weighted)
        for f in feats:
            for k in ("prompt_ids", "chosen_ids", "rejected_ids"):
                f[k] = [self.index[i] for i in f[k]]
        self._ensure_cached(feats, cfg)
        return feats, report

    def prefill(self, original_seqs: list[list[int]], cfg) -> None:
        """The frozen blocks' output for every sequence of the task, computed once and kept in
        <out>/frozen_states.pt (keyed by the model, vocabulary, cut and precision) for later processes."""
        from rdo.utils import atomic
        from rdo.utils.fingerprint import digest, model_fingerprint
        from rdo.train.trainer import training_autocast

        seqs = [[self.index[i] for i in s] for s in original_seqs]
        key = digest([VERSION, model_fingerprint(self.model_dir), self.keep, self.cache.n_frozen, cfg.bf16, sorted(map(tuple, seqs))])
        path = self.out / "frozen_states.pt"
        if path.exists():
            saved = self.torch.load(path, weights_only=True)
            if saved["key"] == key:
                self.cache.states = {tuple(ids): st for ids, st in zip(saved["ids"], saved["states"])}
                log.info("frozen states: read %d sequences from %s", len(self.cache.states), path)
        missing = [s for s in seqs if tuple(s) not in self.cache.states]
        if missing:
            self.cache.fill(missing, 64, lambda: training_autocast(cfg), progress=False)
            with atomic.atomic_path(path) as tmp:
                self.torch.save({"key": key, "ids": [list(k) for k in self.cache.states], "states": list(self.cache.states.values())}, tmp)
        self._ensure_cached([{"prompt_ids": s, "chosen_ids": [], "rejected_ids": []} for s in seqs[:4]], cfg, verify_only=True)

    def _ensure_cached(self, feats: list[dict], cfg, verify_only: bool = False) -> None:
        from rdo.train.trainer import training_autocast

        seqs = [f["prompt_ids"] + f[k] for f in feats for k in ("chosen_ids", "rejected_ids")]
        if all(tuple(s) in self.cache.states for s in seqs) and (self.verified or not verify_only):
            return
        autocast = lambda: training_autocast(cfg)  # noqa: E731
        self.cache.uninstall()
        self.cache.fill(seqs, 64, autocast, progress=False)
        if not self.verified:  # once: the replay must reproduce the plain forward (as --cache_frozen checks)
            error = self.cache.verify(seqs[:4], autocast)
            if error > (1e-2 if cfg.bf16 else 1e-4):
                raise RuntimeError(f"frozen-layer replay differs from the model's forward by {error:.2g}")
            log.info("frozen-layer replay checked (relative difference %.1e)", error)
            self.verified = True
        self.cache.install()

    def reset(self) -> None:
        with self.torch.no_grad():
            for k, p in self.model.named_parameters():
                if k in self.initial:
                    p.copy_(self.initial[k])

    def logps(self, feats: list[dict], cfg) -> list[tuple[float, float]]:
        """(chosen, rejected) summed log-probs of each row under the current policy."""
        from rdo.train.trainer import training_autocast

        was_training = self.model.training
        self.model.eval()
        out = []
        with self.torch.no_grad(), training_autocast(cfg):
            for i in range(0, len(feats), 32):
                vals = self.method.ref_step(self.model, self.collator(feats[i : i + 32]))
                out += list(zip(vals["ref_chosen_logps"].tolist(), vals["ref_rejected_logps"].tolist()))
        self.model.train(was_training)
        return out

    def train(self, cfg, at_epochs: tuple[int, ...], evaluate) -> dict:
        """Train from the initial weights; `evaluate()` runs after each epoch in `at_epochs` (constant lr:
        epoch e of a longer run is the e-epoch run). Returns the training summary and {epoch: evaluate()}.

        The loss, collator and reference step are `cfg.method`'s (rdo's registry, as `rdo align` takes them)."""
        from datasets import Dataset
        from transformers import TrainerCallback, set_seed

        from rdo.core.methods import get_method
        from rdo.train.align import attach_reference, reference_key
        from rdo.train.trainer import RDOTrainer

        method = get_method(cfg.method)
        collator = method.make_collator(self.pad_id, 1)
        set_seed(cfg.seed)
        self.reset()
        feats, report = self.features(cfg)
        attach_reference(cfg, method, feats, self.model, collator, cfg.dataset_name,
                         reference_key(cfg, method, self.tokenizer))  # the untrained policy, whatever the method
        evals = {}

        class AtEpochs(TrainerCallback):
            def on_epoch_end(self, args, state, control, **kwargs):
                e = round(state.epoch)
                if e in at_epochs:
                    evals[e] = evaluate()

        trainer = RDOTrainer(model=self.model, args=cfg, data_collator=collator, train_dataset=Dataset.from_list(feats),
                             processing_class=self.tokenizer, method=method, callbacks=[AtEpochs()])
        result = trainer.train()
        hist = [h for h in trainer.state.log_history if "loss" in h]
        return {"train": result.metrics, "coefficients": report["coefficients"]["weight"],
                "last_log": hist[-1] if hist else None, "evals": evals}


def candidate_logps(engine: Engine, rows: list[dict], feats_cfg) -> dict[str, list[float]]:
    """{prompt id: summed log-prob of each distinct candidate} under the current policy."""
    feats, _ = engine.features(feats_cfg, weighted=False)
    vals = engine.logps(feats, feats_cfg)
    out: dict[str, dict[int, float]] = {}
    for r, (c, w) in zip(rows, vals):
        i, j = r["cands"]
        out.setdefault(r["prompt_id"], {}).update({i: c, j: w})
    return {pid: [d[i] for i in sorted(d)] for pid, d in out.items()}


def policy_value(logps: list[float], base_logps: list[float], gold: list[float]) -> float:
    """The policy's expected gold reward on its own answers, estimated from the base model's samples.

    The candidates were sampled from SmolLM2 itself (temperature 1): self-normalised importance
    sampling weights each by pi(y) / pi_base(y), i.e. a softmax of the log-ratios. The base scores the
    plain mean of its candidates; a policy that moves mass towards better-scored answers scores higher
    (at most the best of the prompt's candidates: 4 samples per prompt bound how far it can see).
    """
    return expected_gold([a - b for a, b in zip(logps, base_logps)], gold)


def expected_gold(logps: list[float], gold: list[float]) -> float:
    """Gold reward expected under a softmax over the prompt's candidates."""
    m = max(logps)
    w = [math.exp(x - m) for x in logps]
    return sum(wi * g for wi, g in zip(w, gold)) / sum(w)


# --- the study ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Policy:
    """A policy trained per (tau, seed): its folder under runs/tau*/s*/, the oracle accuracy of the R it reads
    (None: DPO reads none), the exponent alpha of its weights R^alpha and its loss (`dpo` for DPO and DPO+rc)."""

    name: str
    accuracy: float | None
    alpha: float = 0.0
    method: str = "dpo"

    @property
    def kind(self) -> str:
        """Its --methods entry: dpo_rc, odpo, mmpo, rpo (or dpo, the baseline)."""
        return "dpo_rc" if self.method == "dpo" and self.alpha else self.method


def policies(study: Study) -> list[Policy]:
    """DPO, then per oracle accuracy every policy of `study.methods` (DPO+rc at each alpha, then odpo, mmpo, rpo)."""
    out = [Policy("dpo", None)]
    for a in study.accuracies:
        if "dpo_rc" in study.methods:
            out += [Policy(f"rc-acc{a}-alpha{al}", a, al) for al in study.alphas]
        out += [Policy(f"{m}-acc{a}", a, 0.0, m) for m in TUNED if m in study.methods]
    return out


def run_key(common: dict, data: str, study: Study, *, seed: int, alpha: float, lr: float, which, method: str = "dpo",
            options: dict | None = None) -> dict:
    """A training's stage key. DPO and DPO+rc keep the key they had before other methods joined (no method
    field), so their finished runs stay valid; a method that reads R adds its name and options."""
    key = {"stage": "run", **common, "data": data, "alpha": alpha, "lr": lr, "epochs": max(study.epochs),
           "eval_at": study.epochs, "seed": seed, "which": list(which)}
    if method != "dpo":
        key |= {"method": method, "options": options or {}}
    return key


def run_study(study: Study, out: Path, stop_after: str | None = None, worker: int = 0, workers: int = 1) -> dict:
    from rdo.demo.candidates import CANDIDATES, load_candidates
    from rdo.demo.smollm import smollm2_dir
    from rdo.utils import atomic
    from rdo.utils.fingerprint import digest, file_digest, model_fingerprint

    rows = load_candidates(CANDIDATES)
    model_dir = str(smollm2_dir())
    model_fp = model_fingerprint(model_dir)
    cand_fp = file_digest(CANDIDATES)

    # evaluation sets and every candidate of the task (for the vocabulary): deterministic, rewritten only if they differ
    evals, golds = {}, {}
    for which in ("train", "valid", "heldout"):
        evals[which], golds[which] = eval_rows(rows, which)
        path = out / "data" / f"eval_{which}.jsonl"
        if not path.exists() or [json.loads(x) for x in path.read_text().splitlines()] != evals[which]:
            atomic.write_jsonl(path, evals[which])
    vocab_source = out / "data" / "all_candidates.jsonl"
    every = evals["train"] + evals["valid"] + evals["heldout"]
    if not vocab_source.exists() or [json.loads(x) for x in vocab_source.read_text().splitlines()] != every:
        atomic.write_jsonl(vocab_source, every)
    atomic.write_json(out / "data" / "gold.json", {w: golds[w] for w in ("valid", "heldout")})
    eval_fp = {w: file_digest(out / "data" / f"eval_{w}.jsonl") for w in ("valid", "heldout")}

    # data: per (tau, seed)
    for tau in study.noise:
        for seed in (*study.seeds, study.regime_seed):
            folder = out / "data" / f"tau{tau}-s{seed}"
            key = {"stage": "data", "tau": tau, "seed": seed, "pairs": study.pairs, "accuracies": study.accuracies, "candidates": cand_fp}
            stage(folder / "stage.json", key, lambda: make_data(study, rows, tau, seed, folder),
                  outputs=tuple(folder / f"acc{a}.jsonl" for a in study.accuracies))
    if stop_after == "data":
        return {}

    engine = Engine(study, model_dir, out, vocab_source)
    common = {"model": model_fp, "vocab": digest(engine.keep), "eval": eval_fp, "top_layers": study.top_layers, "beta": study.beta,
              "batch": study.batch_size, "lengths": [study.max_length, study.max_prompt_length], "bf16": study.bf16}
    eval_cfg = {w: engine.config(out / "data" / f"eval_{w}.jsonl", out / "scratch", alpha=0.0, lr=1e-5, epochs=1, seed=0)
                for w in ("valid", "heldout")}

    def evaluate(which=("valid", "heldout")) -> dict:
        return {w: candidate_logps(engine, evals[w], eval_cfg[w]) for w in which}

    def base():
        engine.reset()
        return evaluate()

    base_res = stage(out / "base.json", {"stage": "base", **common}, base)

    def training(tau: float, seed: int, acc: float | None, alpha: float, lr: float, name: str, which,
                 method: str = "dpo", options: dict | None = None) -> tuple[Path, dict, object]:
        """(result file, stage key, run) of one training on the pairs of (tau, seed), R from oracle accuracy `acc`."""
        data_file = out / "data" / f"tau{tau}-s{seed}" / f"acc{acc if acc is not None else study.accuracies[-1]}.jsonl"
        epochs = max(study.epochs)
        key = run_key(common, file_digest(data_file), study, seed=seed, alpha=alpha, lr=lr, which=which, method=method, options=options)

        def fn():
            cfg = engine.config(data_file, out / "scratch", alpha=alpha, lr=lr, epochs=epochs, seed=seed, method=method, options=options)
            t = time.time()
            info = engine.train(cfg, study.epochs, lambda: evaluate(which))
            return info | {"seconds": round(time.time() - t, 1)} | ({"method": method, "options": options} if method != "dpo" else {})

        return out / "runs" / name / "result.json", key, fn

    def train_eval(*args, **kwargs) -> dict:
        path, key, fn = training(*args, **kwargs)
        return stage(path, key, fn)

    def shared(jobs: dict) -> dict:
        """Run this worker's share of `jobs` ({name: training(...)}), then wait for the others' results (same keys)."""
        results = {}
        for i, (name, (path, key, fn)) in enumerate(jobs.items()):
            if i % workers == worker:
                results[name] = stage(path, key, fn)
        for name, (path, key, _) in jobs.items():
            while name not in results:
                done = finished(path, key)
                if done is None:
                    time.sleep(15)
                else:
                    results[name] = done
        return results

    # the regimes: DPO's learning rate, chosen on the validation prompts only (labels of --regime_seed, the
    # noisier level); light and strong = that lr for the short and the long epoch budget
    valid_gold = lambda lp: mean(policy_value(lp[p], base_res["valid"][p], golds["valid"][p]) for p in golds["valid"])  # noqa: E731
    base_valid = valid_gold(base_res["valid"])
    tau_r = max(study.noise)
    search = {}
    results = shared({lr: training(tau_r, study.regime_seed, None, 0.0, lr, f"regime/tau{tau_r}-lr{lr}", ("valid",)) for lr in study.lrs})
    for lr in study.lrs:
        r = results[lr]
        for e in study.epochs:
            search[f"lr {lr:g}, {e} epoch(s)"] = {"lr": lr, "epochs": e, "dpo_valid_minus_base": valid_gold(r["evals"][str(e)]["valid"]) - base_valid}
    best = max(search.values(), key=lambda v: v["dpo_valid_minus_base"])
    regimes = {"light": {"epochs": min(study.epochs), "lr": best["lr"]}, "strong": {"epochs": max(study.epochs), "lr": best["lr"]}}
    atomic.write_json(out / "regimes.json", {"regimes": regimes, "search": search, "base_valid": base_valid, "tau": tau_r})
    log.info("regimes (chosen on validation): %s", regimes)
    if stop_after == "regimes":
        return {}

    # the methods that read R in the loss: each one's hyperparameter, chosen on the validation prompts only, like
    # the regimes (labels of --regime_seed at the noisier level, the regimes' learning rate), with R from the
    # oracle at study.tune_accuracy; the value with the best validation value after the strong budget is kept
    tuned, tune_search = {}, {}
    tuned_methods = [m for m in TUNED if m in study.methods]
    if tuned_methods:
        jobs = {(m, v): training(tau_r, study.regime_seed, study.tune_accuracy, 0.0, best["lr"], f"methods/tau{tau_r}-{m}-{v:g}",
                                 ("valid",), m, method_options(study, m, v))
                for m in tuned_methods for v in candidates(study, m)}
        results = shared(jobs)
        strong = max(study.epochs)
        for m in tuned_methods:
            gain = {v: {e: valid_gold(results[m, v]["evals"][str(e)]["valid"]) - base_valid for e in study.epochs} for v in candidates(study, m)}
            chosen = max(candidates(study, m), key=lambda v: gain[v][strong])
            tuned[m] = method_options(study, m, chosen)
            tune_search[m] = {"option": TUNED[m][0], "chosen": chosen,
                              "valid_minus_base": {f"{v:g}": {f"{e} epoch(s)": g for e, g in gain[v].items()} for v in gain}}
        atomic.write_json(out / "methods.json", {"tuned": tuned, "search": tune_search, "tau": tau_r, "seed": study.regime_seed,
                                                 "accuracy": study.tune_accuracy, "lr": best["lr"], "epochs": strong, "base_valid": base_valid})
        log.info("methods (chosen on validation): %s", tuned)
    if stop_after == "methods":
        return {}

    # the grid, noisier level first, seed by seed: a partial study has whole seeds; `workers` processes share it
    items = [(tau, seed, p) for tau in sorted(study.noise, reverse=True) for seed in study.seeds for p in policies(study)]
    for i, (tau, seed, p) in enumerate(items):
        if i % workers != worker:
            continue
        t = time.time()
        train_eval(tau, seed, p.accuracy, p.alpha, best["lr"], f"tau{tau}/s{seed}/{p.name}", ("heldout",), p.method, tuned.get(p.method))
        log.info("[%d/%d] tau %s seed %d %s: %.0fs", i + 1, len(items), tau, seed, p.name, time.time() - t)
    return {"regimes": regimes, "methods": tuned}


def mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs)


# --- report ------------------------------------------------------------------------------------------

def machine() -> str:
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
                   if line.startswith("Model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or "unknown CPU"
    return cpu


def collect(study: Study, out: Path) -> dict:
    """Per (tau, regime): the (seeds x prompts) grids of expected gold reward of base, DPO and every policy
    that uses R; each of those gets a row (`policies`) with its difference to DPO."""
    from rdo.evaluate.stats import min_detectable_effect, two_way_bootstrap

    golds = json.loads((out / "data" / "gold.json").read_text())["heldout"]
    prompts = sorted(golds)
    base = json.loads((out / "base.json").read_text())["result"]["heldout"]
    base_row = [policy_value(base[p], base[p], golds[p]) for p in prompts]
    regimes = json.loads((out / "regimes.json").read_text())["regimes"]
    cells, achieved = [], {}
    for tau in study.noise:
        for s in study.seeds:
            f = out / "data" / f"tau{tau}-s{s}" / "stage.json"
            if f.exists():  # a seed not run at this noise level has no data either
                for a, info in json.loads(f.read_text())["result"]["oracle"].items():
                    achieved.setdefault((tau, a), []).append(info["agreement"])
    for tau in study.noise:
        for regime in regimes:
            grids: dict[str, list[list[float]]] = {}
            options: dict[str, list[dict]] = {}  # the options each seed's run of a method trained with
            seeds_done = []
            for s in study.seeds:
                rows, opts = {}, {}
                for pol in policies(study):
                    f = out / "runs" / f"tau{tau}" / f"s{s}" / pol.name / "result.json"
                    if not f.exists():
                        break
                    result = json.loads(f.read_text())["result"]
                    opts[pol.name] = result.get("options")
                    lp = result["evals"][str(regimes[regime]["epochs"])]["heldout"]
                    rows[pol.name] = [policy_value(lp[p], base[p], golds[p]) for p in prompts]
                else:
                    seeds_done.append(s)
                    for name, row in rows.items():
                        grids.setdefault(name, []).append(row)
                        options.setdefault(name, []).append(opts[name])
            if not seeds_done:
                continue
            dpo = grids["dpo"]
            diff = lambda a, b: [[x - y for x, y in zip(ra, rb)] for ra, rb in zip(a, b)]  # noqa: E731

            def compare(a, b):
                r = two_way_bootstrap(diff(a, b), 2000, 0)
                return r | {"mde": min_detectable_effect(r["se"])}

            cell = {"tau": tau, "regime": regime, **regimes[regime], "seeds": seeds_done, "prompts": len(prompts),
                    "base": mean(base_row), "dpo": mean(map(mean, dpo)), "dpo_minus_base": compare(dpo, [base_row] * len(dpo)),
                    "policies": []}
            for pol in policies(study)[1:]:
                opts = {json.dumps(o, sort_keys=True) for o in options[pol.name]}
                if len(opts) > 1:
                    raise ValueError(f"{out}/runs/tau{tau}/s*/{pol.name}: the seeds trained with different options {sorted(opts)}; "
                                     "rerun the study (without --report_only) so every seed uses the options chosen on validation")
                cell["policies"].append({"method": pol.kind, "accuracy": pol.accuracy, "alpha": pol.alpha, "options": json.loads(opts.pop()),
                                         "achieved": mean(achieved[tau, str(pol.accuracy)]),
                                         "mean": mean(map(mean, grids[pol.name])), "minus_dpo": compare(grids[pol.name], dpo)})
            cells.append(cell)
    return {"cells": cells}


def label(row: dict) -> str:
    """A policy's name in the table and the figure: "DPO+rc α = 0.5", "ODPO s = 3", "RPO (sq) η = 10"."""
    if row["method"] == "dpo_rc":
        return f"DPO+rc α = {row['alpha']}"
    opts = dict(row["options"])
    variant = opts.pop("rpo_variant", None)
    (field, value), = opts.items()
    return f"{row['method'].upper()}{f' ({variant})' if variant else ''} {SYMBOL[field]} = {value:g}"


def fmt(r: dict) -> str:
    lo, hi = r["ci95"]
    return f"{r['mean']:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def table(res: dict, header: str) -> str:
    lines = [header, "", "| τ (wrong labels) | regime | seeds | DPO − base (MDE) | scorer accuracy (achieved) | policy | policy − DPO, 95% CI | MDE |",
             "|---|---|---|---|---|---|---|---|"]
    for c in res["cells"]:
        first = True
        for r in c["policies"]:
            lead = (f"| {c['tau']} ({c['wrong']:.0%}) | {c['regime']} ({c['epochs']} ep, lr {c['lr']:g}) | {len(c['seeds'])} | "
                    f"{fmt(c['dpo_minus_base'])} ({c['dpo_minus_base']['mde']:.3f}) |") if first else "| | | | |"
            first = False
            lines.append(f"{lead} {r['accuracy']} ({r['achieved']:.3f}) | {label(r)} | {fmt(r['minus_dpo'])} | {r['minus_dpo']['mde']:.3f} |")
    return "\n".join(lines)


# How each policy's line looks: DPO+rc filled markers (o: alpha 1), the methods reading R in the loss open ones.
LOOK = {"odpo": ("tab:green", "^"), "mmpo": ("tab:red", "v"), "rpo": ("tab:purple", "D")}


def series(res: dict) -> list[tuple[str, float]]:
    """The figure's lines within a panel and noise level, in table order: (method, alpha) of each policy kind."""
    return list(dict.fromkeys((r["method"], r["alpha"]) for c in res["cells"] for r in c["policies"]))


def figure(res: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regimes = list(dict.fromkeys(c["regime"] for c in res["cells"]))
    lines = series(res)
    rc_colours = iter(["tab:blue", "tab:orange", "tab:cyan", "tab:olive"])
    look = {(m, a): LOOK[m] if m in LOOK else (next(rc_colours), "o" if a == 1.0 else "s") for m, a in lines}
    fig, axes = plt.subplots(1, len(regimes), figsize=(5.5 * len(regimes), 4.2 + 0.4 * max(0, len(lines) - 2)), sharey=True, squeeze=False)
    for ax, regime in zip(axes[0], regimes):
        for c in (c for c in res["cells"] if c["regime"] == regime):
            for k, (method, alpha) in enumerate(lines):
                rs = [r for r in c["policies"] if (r["method"], r["alpha"]) == (method, alpha)]
                if not rs:
                    continue
                xs = [r["achieved"] + (k - (len(lines) - 1) / 2) * 0.006 + (0.003 if c["tau"] != res["cells"][0]["tau"] else 0) for r in rs]
                ys = [r["minus_dpo"]["mean"] for r in rs]
                err = [[y - r["minus_dpo"]["ci95"][0] for y, r in zip(ys, rs)], [r["minus_dpo"]["ci95"][1] - y for y, r in zip(ys, rs)]]
                colour, marker = look[method, alpha]
                ax.errorbar(xs, ys, yerr=err, marker=marker, color=colour, capsize=3,
                            markerfacecolor="white" if method in LOOK else colour,
                            linestyle="-" if c["tau"] == res["cells"][0]["tau"] else "--",
                            label=f"{label(rs[0])}, τ = {c['tau']} ({c['wrong']:.0%} wrong)")
            ax.axhline(0, color="grey", linewidth=0.8)
        first = next(c for c in res["cells"] if c["regime"] == regime)
        ax.set_title(f"{regime}: {first['epochs']} epoch(s), lr {first['lr']:g}")
        ax.set_xlabel("scorer accuracy (sign of R vs true preference, training pairs)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("policy − DPO, expected gold reward (95% CI)")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def tuning_note(tuned: dict) -> str:
    """One sentence: each method's hyperparameter, the values tried and the one chosen on validation."""
    parts, at = [], f"{tuned['epochs']} epoch(s)"
    for m, s in tuned["search"].items():
        tried = ", ".join(f"{v}: {g[at]:+.3f}" for v, g in s["valid_minus_base"].items())
        parts.append(f"{m.upper()} {SYMBOL[s['option']]} = {s['chosen']:g} (validation − base after {at}, per value: {tried})")
    return (f"Chosen on the validation prompts only (τ = {tuned['tau']}, labels of seed {tuned['seed']}, oracle accuracy "
            f"{tuned['accuracy']}, lr {tuned['lr']:g}): " + "; ".join(parts) + ".")


def report(study: Study, out: Path, figure_path: Path | None, command: str) -> str:
    from rdo.demo.pipeline import native_bf16

    res = collect(study, out)
    for c in res["cells"]:
        wrong = [json.loads((out / "data" / f"tau{c['tau']}-s{s}" / "stage.json").read_text())["result"]["labels"]["wrong_label_share"]
                 for s in c["seeds"]]
        c["wrong"] = mean(wrong)
    precision = "bf16 autocast" if study.bf16 and native_bf16() else "fp32"
    header = (f"Dose-response study: {study.pairs} noisy pairs, SmolLM2-135M-Instruct top {study.top_layers} of 30 blocks trained, "
              f"β = {study.beta}, {res['cells'][0]['prompts'] if res['cells'] else '?'} held-out prompts; CPU: {machine()}, {precision}. "
              f"Command: `{command}`.")
    if any(m in TUNED for m in study.methods):
        tuned = json.loads((out / "methods.json").read_text())
        res["methods"] = tuned
        header += "\n\n" + tuning_note(tuned)
    text = table(res, header)
    res |= {"cpu": machine(), "precision": precision, "command": command, "study": dataclasses.asdict(study)}
    from rdo.utils import atomic

    atomic.write_json(out / "study.json", res)
    atomic.write_text(out / "study.md", text + "\n")
    if figure_path and res["cells"]:
        figure(res, figure_path, f"{header.split(';')[0]}\n{machine()}, {precision}; mean over seeds × prompts, two-way bootstrap 95% CI")
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/dose_response")
    p.add_argument("--seeds", type=int, nargs="+", default=list(Study.seeds))
    p.add_argument("--noise", type=float, nargs="+", default=list(Study.noise), help="label-noise temperatures tau")
    p.add_argument("--lrs", type=float, nargs="+", default=list(Study.lrs))
    p.add_argument("--epochs", type=int, nargs=2, default=list(Study.epochs), help="light and strong epoch budgets")
    p.add_argument("--pairs", type=int, default=Study.pairs)
    p.add_argument("--top_layers", type=int, default=Study.top_layers)
    p.add_argument("--accuracies", type=float, nargs="+", default=list(Study.accuracies),
                   help="oracle accuracies (sign agreement of R); DPO trains on the last one's file (R unread), so keep 1.0 last to reuse runs")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(Study.methods),
                   help="policies trained beside DPO: dpo_rc (R^alpha weights, alpha 0.5 and 1) and/or odpo, mmpo, rpo (R in the loss, alpha 0)")
    p.add_argument("--odpo_offset_scales", type=float, nargs="+", default=list(Study.odpo_offset_scales), help="ODPO's s, tried on validation")
    p.add_argument("--mmpo_gammas", type=float, nargs="+", default=list(Study.mmpo_gammas), help="MMPO's gamma, tried on validation")
    p.add_argument("--rpo_etas", type=float, nargs="+", default=list(Study.rpo_etas), help="RPO's eta, tried on validation")
    p.add_argument("--stop_after", choices=["data", "regimes", "methods"], default=None)
    p.add_argument("--worker", type=int, nargs=2, default=[0, 1], metavar=("K", "N"),
                   help="run the K-th of N shares of the grid (N processes in parallel; every process uses one thread); run --stop_after regimes (and methods) first")
    p.add_argument("--report_only", action="store_true", help="only rebuild the table and figure from the finished runs")
    p.add_argument("--figure", default="docs/dose_response.png")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("transformers", "rdo.train.align", "rdo.core.coefficients", "rdo.train.reference"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from rdo.demo.pipeline import native_bf16

    study = Study(noise=tuple(args.noise), seeds=tuple(args.seeds), lrs=tuple(args.lrs), epochs=tuple(args.epochs),
                  pairs=args.pairs, top_layers=args.top_layers, bf16=native_bf16(), accuracies=tuple(args.accuracies),
                  methods=tuple(args.methods), odpo_offset_scales=tuple(args.odpo_offset_scales), mmpo_gammas=tuple(args.mmpo_gammas),
                  rpo_etas=tuple(args.rpo_etas))
    out = Path(args.out)
    command = " ".join(["python experiments/dose_response.py", *(argv if argv is not None else sys.argv[1:])])
    import torch

    # One thread per process, always: the study was measured so, bf16 kernels give other digits with more threads,
    # and with 2 threads the frozen-layer replay check failed (relative difference 0.015 on this Xeon).
    torch.set_num_threads(1)
    if not args.report_only:
        start = time.time()
        run_study(study, out, args.stop_after, *args.worker)
        log.info("study: %.1f min", (time.time() - start) / 60)
        if args.stop_after or args.worker[1] > 1:
            return 0
    print(report(study, out, Path(args.figure) if args.figure else None, command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
