"""DPO training, rdo vs TRL 1.16's `DPOTrainer`, side by side: speed, memory and the same losses.

Both frameworks get the same model (seeded random weights of a real architecture), the same
preference rows (exact token lengths), the same batches in the same order, the same optimizer,
learning rate, schedule, β, step count and precision, and precomputed reference log-probs. Each
configuration trains in its own process, so its peak memory is its own.

Measured per configuration: seconds per optimizer step (median after warm-up, from a
`TrainerCallback` that stamps every step's end), non-pad tokens per second, peak memory of the
training phase, and the Trainer's own logged loss at every step. The correctness check: rdo with
α = 0 is plain DPO, so its first loss is ln 2 (policy = reference) and equals TRL's, and the next
losses follow TRL's — with prefix sharing (rdo's default: one [prompt | chosen | rejected] sequence
per pair) and with padded prompt+chosen / prompt+rejected rows. rdo with α = 0.5 shows what the
per-pair weights cost.

Shapes: today's (prompt 64, responses 64-128), an HH-like one (prompt 256, responses 32-128: long
dialogues, short answers, where a shared prompt saves most) and a 128k-vocabulary one.
RDO_BENCH_DPO_SHAPES=a,b and RDO_BENCH_DPO_STEPS=N shorten a run (both land in `settings`).

Every setting where the two sides differ, and why, is in `FAIRNESS` and lands in the results.
"""

from __future__ import annotations

import math
import os
import time

from benchmarks.measure import median, run_workers, steady, worker_main

# Sizes per mode. Batches are pairs per device; each pair is two sequences in one forward.
# --quick only checks that everything runs and agrees: one thread per process, TRL and rdo at once, both
# rdo runs in one process, a learning rate large enough that the tiny model's loss visibly leaves ln 2.
# Its timings and memory mean nothing.
PROFILES = {
    "quick": dict(models=["tiny"], batch_size=2, steps=6, warmup=2, prompt_len=16, response_len=(16, 32),
                  learning_rate=1e-3, threads=1, parallel=2, share_rdo_process=True),
    "cpu": dict(models=["smollm2-135m", "smollm2-135m-hh", "llama-1b-2l"], batch_size=2, steps=10, warmup=2, prompt_len=64,
                response_len=(64, 128), learning_rate=1e-5, threads=None, parallel=1, share_rdo_process=False,
                # the 128k-vocabulary row measures memory: fewer steps, longer responses (bigger logits)
                per_model={"llama-1b-2l": dict(steps=4, warmup=1, response_len=(192, 256)),
                           "smollm2-135m-hh": dict(arch="smollm2-135m", prompt_len=256, response_len=(32, 128))}),
    "cuda": dict(models=["smollm2-135m", "smollm2-135m-hh", "llama-1b"], batch_size=8, steps=30, warmup=5, prompt_len=64,
                 response_len=(64, 128), learning_rate=1e-5, threads=None, parallel=1, share_rdo_process=False,
                 per_model={"smollm2-135m-hh": dict(arch="smollm2-135m", prompt_len=256, response_len=(32, 128))}),
}
# (framework, α, prefix sharing): α = None for TRL
RUNS = [("trl", None, None), ("rdo", 0.0, True), ("rdo", 0.0, False), ("rdo", 0.5, True)]
COMMON = dict(beta=0.1, max_length=1024, seed=0)
LOSS_STEPS = 5  # compare the first this-many logged losses (all of them when a run has fewer steps)
# (|first loss - ln 2| and |rdo - TRL| at step 1, relative agreement of the next losses)
TOLERANCES = {
    "fp32": (1e-4, 1e-3),  # rounding only; Adam amplifies it a little over the steps
    # bf16 autocast: the reference pass and the step see different batch shapes, so bf16 rounding differs.
    "bf16": (5e-2, 5e-2),
}

FAIRNESS = [
    "Same model object construction (seeded random weights, identical checksum), same rows, same batch size, "
    "max_length 1024 (no row is truncated by either), β 0.1, AdamW (the Trainer's default, fused where "
    "available), the same learning rate with the default linear decay, max_grad_norm 1.0, no warm-up, seed 0, "
    "per-step logging in both.",
    "Sampler: random in both (TRL's, the Trainer's and rdo's default; rdo's group_by_length would cut padding), "
    "so both see identical batches and their losses can be compared step by step.",
    "Reference log-probs are precomputed in both, before training, with the same batch size as training "
    "(TRL precompute_ref_log_probs=True, precompute_ref_batch_size=B; rdo per_device_eval_batch_size=B). "
    "rdo's pass runs in length-sorted batches; TRL's in dataset order. Neither is timed as a step; setup_s "
    "shows it.",
    "gradient_checkpointing off in both. TRL's config defaults it to True, the Trainer (and so rdo) to False; "
    "with it on, both would trade the same recomputation for activation memory.",
    "Precision: fp32 weights in both; on CUDA bf16 autocast in both (bf16=True, TRL's default), on CPU none "
    "(bf16=False: TRL would otherwise default to bf16 autocast even on CPU).",
    "TRL's defaults kept: its fused, chunked LM head (log-probs without materialising the (B, T, V) logits; "
    "Triton kernels on CUDA, scoring only completion tokens there), the extra per-token metrics it computes "
    "with it (entropy, mean logits, top-1 accuracy), padding_free=False (its only value since the DPO refactor), "
    "pad_to_multiple_of=None, disable_dropout=True (Llama has no dropout, so a no-op). rdo applies the LM head "
    "only at response positions, in chunks, inside one autograd function that recomputes logits in backward "
    "(rdo.core.logps.chunked_logps): neither side materialises (B, T, V) logits.",
    "MFU = 6 x (matmul parameters) x computed tokens/s over the fp32 matmul rate measured in the same worker "
    "with the same threads. Computed tokens are the non-pad tokens the model actually ran (the Trainer's count "
    "of the batch's attention mask): 2 x prompt + chosen + rejected for padded rows, prompt + chosen + rejected "
    "with prefix sharing, so the shared prompt's FLOPs are counted once. The attention score term and the prompt "
    "tokens' share of the LM head are not counted (rdo computes no logits at prompt positions).",
    "rdo is run through the same steps as `rdo align` (prepare_features, the reference pass, RDOTrainer) but "
    "without reading a model folder or saving one, as TRL is given the model object; neither side's setup is timed.",
    "Tokens/s counts the pairs' non-pad tokens as TRL does (the Trainer's include_num_input_tokens_seen="
    "'non_padding': prompt+chosen and prompt+rejected), identical for every row since the batches are identical "
    "(checked: rdo's padded run counts exactly TRL's tokens, its prefix-shared runs exactly batch_size x prompt "
    "fewer); so tokens/s ratios equal step-time ratios.",
    "Prefix sharing (rdo's default, `--prefix_sharing`): one [prompt | chosen | rejected] sequence per pair with "
    "a 4D attention mask (each response sees the prompt and itself) and position ids restarting after the prompt, "
    "for the training steps and the reference pass (rdo.core.prefix); `rdo α=0, padded rows` is "
    "--no_prefix_sharing. TRL has no such option.",
]


# ================================================================================================
# parent: run every configuration in its own process, compare
# ================================================================================================

def run(quick: bool, device: str = "cpu") -> dict:
    profile = PROFILES["quick" if quick else ("cuda" if device.startswith("cuda") else "cpu")]
    settings = dict(COMMON, **profile, device=device)
    results, rows, checks = [], [], {}
    shapes = profile["models"]
    if os.environ.get("RDO_BENCH_DPO_SHAPES"):
        shapes = [m.strip() for m in os.environ["RDO_BENCH_DPO_SHAPES"].split(",") if m.strip()]
        settings["models"] = shapes
    steps = int(os.environ.get("RDO_BENCH_DPO_STEPS", 0)) or None
    for model in shapes:  # a shape: an architecture (`arch`, default its name) and data lengths
        groups = [RUNS[:1], RUNS[1:]] if profile["share_rdo_process"] else [[r] for r in RUNS]
        model_settings = dict(settings, **profile.get("per_model", {}).get(model, {}))
        if steps:
            model_settings.update(steps=steps, warmup=min(model_settings["warmup"], steps - 1))
            settings["steps_override"] = steps
        arch = model_settings.pop("arch", model)
        specs = [dict(model_settings, model=arch, runs=[dict(framework=f, alpha=a, prefix_sharing=p) for f, a, p in g])
                 for g in groups]
        outs = []
        for group, out in zip(groups, run_workers("benchmarks.bench_dpo", specs, profile["parallel"])):
            outs += out["results"] if "results" in out else [dict(out) for _ in group]  # a failed process fails its runs
        by_run = {}
        for (framework, alpha, shared), out in zip([r for g in groups for r in g], outs):
            out.update(model=model, arch=arch, framework=framework, alpha=alpha, prefix_sharing=shared,
                       prompt_len=model_settings["prompt_len"], response_len=model_settings["response_len"])
            by_run[(framework, alpha, shared)] = out
        pair_tokens = by_run[RUNS[0]].get("tokens")  # TRL's count; every run trains on the same batches
        for out in by_run.values():
            results.append(out)
            rows.append(_row(out, model_settings["warmup"], pair_tokens))
        precision = "bf16" if device.startswith("cuda") else "fp32"
        checks[model] = _check(by_run, precision, min(LOSS_STEPS, model_settings["steps"]),
                               model_settings["batch_size"] * model_settings["prompt_len"])
        _add_ratios(rows, model)
    return {
        "title": "DPO training: rdo vs TRL DPOTrainer",
        "settings": settings,
        "columns": COLUMNS,
        "rows": rows,
        "summary": _summary(rows, checks, device),
        "checks": checks,
        "passed": all(c["passed"] for c in checks.values()),
        "fairness": FAIRNESS,
        "runs": results,
    }


COLUMNS = ["model", "framework", "s_per_step", "s_per_step_min", "cpu_s_per_step", "tokens_per_s", "peak_train_mib",
           "train_added_mib", "speed_vs_trl", "memory_vs_trl", "computed_tokens_per_s", "train_gflops",
           "matmul_peak_gflops", "mfu", "setup_s", "first_loss", "load_1m", "error"]


def _summary(rows: list[dict], checks: dict, device: str) -> list[str]:
    memory = "CUDA max_memory_allocated" if device.startswith("cuda") else "peak RSS of the whole process"
    lines = [f"s_per_step: median after warm-up (s_per_step_min: the fastest such step; cpu_s_per_step: median "
             f"process CPU time of all threads, about threads × s_per_step when nothing competes); tokens_per_s: median over "
             f"the same steps of the pairs' non-pad tokens / step time (as TRL counts them: the prompt twice); "
             f"computed_tokens_per_s: the tokens the model ran (the prompt once with prefix sharing), which MFU uses; load_1m: the machine's 1-minute load average around "
             f"training (above the core count, other processes were competing and the timings are inflated); "
             f"peak_train_mib: {memory} during training only; train_added_mib: that peak minus what was in use when "
             f"training started (activations, gradients, optimizer state); "
             f"speed_vs_trl > 1 means faster than TRL, memory_vs_trl < 1 means less memory."]
    for model, c in checks.items():
        if "trl_first_loss" not in c:
            lines.append(f"{model}: loss check FAILED ({c.get('reason')})")
            continue
        lines.append(
            f"{model}: loss check ({c['precision']}) {'passed' if c['passed'] else 'FAILED'}: "
            f"step-1 loss TRL {c['trl_first_loss']:.6f}, rdo α=0 {c['rdo_alpha0_first_loss']:.6f}, padded rows "
            f"{c['rdo_alpha0_padded_first_loss']:.6f} (ln 2 = {c['ln2']:.6f}); first {len(c['trl_losses'])} losses "
            f"differ by at most {c['max_abs_diff']:.2e} (padded rows {c['padded_max_abs_diff']:.2e}); "
            f"TRL {', '.join(f'{x:.5f}' for x in c['trl_losses'])}"
        )
        by = {r["framework"]: r for r in rows if r["model"] == model and "error" not in r}
        a0, a5, pad = by.get("rdo α=0"), by.get("rdo α=0.5"), by.get(PADDED_LABEL)
        if a0 and pad:
            lines.append(f"{model}: prefix sharing on vs off (α=0): {pad['s_per_step'] / a0['s_per_step']:.2f}x speed, "
                         f"{round(a0['peak_train_mib'] - pad['peak_train_mib']):+d} MiB peak")
        if a0 and a5:
            lines.append(f"{model}: weights on (α=0.5) vs off (α=0): "
                         f"{a5['s_per_step'] / a0['s_per_step'] - 1:+.1%} s/step, "
                         f"{round(a5['peak_train_mib'] - a0['peak_train_mib']):+d} MiB peak")
    return lines


PADDED_LABEL = "rdo α=0, padded rows"


def _label(out: dict) -> str:
    if out["framework"] == "trl":
        return "TRL DPOTrainer"
    return PADDED_LABEL if out.get("prefix_sharing") is False else f"rdo α={out['alpha']:g}"


def _row(out: dict, warmup: int, pair_tokens: list[int] | None = None) -> dict:
    """One table row; tokens/s counts `pair_tokens` (TRL's count of the same batches) when given."""
    row = {"model": out["model"], "framework": _label(out)}
    if "error" in out:
        return dict(row, error=out["error"])
    step_s, computed = steady(out["step_s"], warmup), steady(out["tokens"], warmup)
    pairs = steady(pair_tokens, warmup) if pair_tokens and len(pair_tokens) == len(out["tokens"]) else computed
    row.update(
        s_per_step=median(step_s),
        s_per_step_min=min(step_s),
        cpu_s_per_step=median(steady(out["cpu_s"], warmup)),
        tokens_per_s=median([n / t for n, t in zip(pairs, step_s)]),
        computed_tokens_per_s=median([n / t for n, t in zip(computed, step_s)]),
        peak_train_mib=out["peak_train_mib"],
        train_added_mib=out["peak_train_mib"] - out["at_train_start_mib"],
        peak_process_mib=out["peak_process_mib"],
        setup_s=out["setup_s"],
        first_loss=out["losses"][0] if out["losses"] else None,
        load_1m=sum(out["load_avg_1m"]) / 2,
    )
    # Model FLOP utilisation: 6 N per computed token (forward 2N + backward 4N; the reference is precomputed,
    # so no 2N reference forward per step; a shared prompt is computed, and counted, once), attention's T^2
    # term left out, against this worker's fp32 matmul rate.
    row["train_gflops"] = 6 * out["n_params_matmul"] * row["computed_tokens_per_s"] / 1e9
    row["matmul_peak_gflops"] = out["matmul_peak_gflops"]
    row["mfu"] = row["train_gflops"] / out["matmul_peak_gflops"]
    return row


def _add_ratios(rows: list[dict], model: str) -> None:
    """TRL's s/step and memory divided by each row's (> 1: that row is faster / smaller than TRL)."""
    mine = [r for r in rows if r["model"] == model]
    trl = next((r for r in mine if r["framework"].startswith("TRL") and "error" not in r), None)
    for r in mine:
        if trl is None or "error" in r:
            continue
        r["speed_vs_trl"] = trl["s_per_step"] / r["s_per_step"]
        r["memory_vs_trl"] = r["peak_train_mib"] / trl["peak_train_mib"]


def _check(by_run: dict, precision: str, n_losses: int = LOSS_STEPS, prompt_tokens: int = 0) -> dict:
    """rdo α=0 must reproduce TRL, with prefix sharing and with padded rows: first loss = ln 2 in all, equal,
    and the next losses close; the same initial weights and batches (`prompt_tokens` per step fewer computed
    tokens with prefix sharing)."""
    first_tol, rtol = TOLERANCES[precision]
    trl, rdo, padded = by_run[("trl", None, None)], by_run[("rdo", 0.0, True)], by_run[("rdo", 0.0, False)]
    if any("error" in r for r in (trl, rdo, padded)):
        return {"passed": False, "reason": "a run failed", "trl_error": trl.get("error"),
                "rdo_error": rdo.get("error"), "rdo_padded_error": padded.get("error")}
    a = trl["losses"][:n_losses]
    ln2 = math.log(2)

    def agree(run: dict) -> tuple[bool, list[float], list[float]]:
        b = run["losses"][:n_losses]
        diffs = [abs(x - y) for x, y in zip(a, b)]
        rel = [d / abs(x) for d, x in zip(diffs, a)]
        first_ok = abs(a[0] - ln2) < first_tol and abs(b[0] - ln2) < first_tol and diffs[0] < first_tol
        return first_ok and all(r < rtol for r in rel[1:]) and len(a) == len(b) == n_losses, diffs, rel

    ok_shared, diffs, rel = agree(rdo)
    ok_padded, pdiffs, prel = agree(padded)
    same_weights = trl["weights_checksum"] == rdo["weights_checksum"] == padded["weights_checksum"]
    same_tokens = trl["tokens"] == padded["tokens"] and rdo["tokens"] == [t - prompt_tokens for t in trl["tokens"]]
    return {
        "passed": bool(ok_shared and ok_padded and same_weights and same_tokens),
        "ln2": ln2,
        "trl_first_loss": a[0],
        "rdo_alpha0_first_loss": rdo["losses"][0],
        "rdo_alpha0_padded_first_loss": padded["losses"][0],
        "trl_losses": a,
        "rdo_alpha0_losses": rdo["losses"][:n_losses],
        "rdo_alpha0_padded_losses": padded["losses"][:n_losses],
        "max_abs_diff": max(diffs),
        "padded_max_abs_diff": max(pdiffs),
        "max_rel_diff_after_step1": max(rel[1:]) if len(rel) > 1 else None,
        "padded_max_rel_diff_after_step1": max(prel[1:]) if len(prel) > 1 else None,
        "loss_moved": max(abs(x - ln2) for x in a) > 10 * TOLERANCES["fp32"][0],  # not a comparison of constants
        "same_initial_weights": same_weights,
        "same_tokens_per_step": same_tokens,
        "precision": precision,
        "tolerances": {"first_abs": first_tol, "later_rel": rtol},
    }


# ================================================================================================
# worker: one framework, one configuration, in its own process
# ================================================================================================

def step_timer(device: str):
    """A `TrainerCallback` stamping each optimizer step's end; the training phase's peak memory."""
    from transformers import TrainerCallback

    from benchmarks.measure import PeakMemory, sync

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.memory = PeakMemory(device)
            self.step_s: list[float] = []
            self.cpu_s: list[float] = []  # process CPU time, all threads: about threads x wall when nothing competes
            self.tokens: list[int] = []
            self._last = self._last_cpu = None
            self._seen = 0

        def on_train_begin(self, args, state, control, **kw):
            self.memory.start()

        def on_step_begin(self, args, state, control, **kw):
            if self._last is None:
                sync(device)
                self._last, self._last_cpu = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kw):
            sync(device)
            now = time.perf_counter()
            cpu = time.process_time()
            self.step_s.append(now - self._last)  # step end to step end: data, forward, backward, optimizer, logging
            self.cpu_s.append(cpu - self._last_cpu)
            self._last, self._last_cpu = now, cpu
            self.tokens.append(state.num_input_tokens_seen - self._seen)
            self._seen = state.num_input_tokens_seen

        def on_train_end(self, args, state, control, **kw):
            self.memory.stop()

    return StepTimer()


def training_args(spec: dict) -> dict:
    """TrainingArguments fields set identically for both frameworks."""
    cuda = spec["device"].startswith("cuda")
    return dict(
        output_dir=spec["tmp_dir"] + "/out", per_device_train_batch_size=spec["batch_size"], max_steps=spec["steps"],
        learning_rate=spec["learning_rate"], seed=spec["seed"], logging_steps=1, save_strategy="no", report_to="none",
        disable_tqdm=True, use_cpu=not cuda, bf16=cuda, gradient_checkpointing=False,
        train_sampling_strategy="random", include_num_input_tokens_seen="non_padding",
    )


def make_trl(spec, model, tokenizer, rows, timer):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(**training_args(spec), beta=spec["beta"], max_length=spec["max_length"],
                     precompute_ref_log_probs=True, precompute_ref_batch_size=spec["batch_size"])
    data = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])
    return DPOTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer, callbacks=[timer])


def make_rdo(spec, model, tokenizer, rows, timer):
    """What `rdo.train.align.align` does, minus loading and saving a model folder."""
    import json
    from pathlib import Path

    from rdo.train.align import prepare_features, training_autocast
    from rdo.config import AlignConfig
    from rdo.core.methods import get_method
    from rdo.train.reference import compute_reference
    from rdo.train.trainer import RDOTrainer

    data = Path(spec["tmp_dir"]) / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = AlignConfig(
        **training_args(spec), model_name_or_path=f"synthetic:{spec['model']}", dataset_name=str(data),
        method="dpo", alpha=spec["alpha"], beta=spec["beta"], max_length=spec["max_length"],
        per_device_eval_batch_size=spec["batch_size"], prefix_sharing=spec["prefix_sharing"],
    )
    method = get_method(cfg.method)
    collator = method.make_collator(tokenizer.pad_token_id, cfg.pad_to_multiple_of, cfg.prefix_sharing)
    features, _ = prepare_features(cfg, method, tokenizer)
    values = compute_reference(model, features, collator, method.ref_step, cfg.per_device_eval_batch_size, cfg.device,
                               autocast=lambda: training_autocast(cfg))  # as `rdo align` does
    for col, vals in values.items():
        for f, v in zip(features, vals):
            f[col] = v
    try:
        from datasets import Dataset

        train = Dataset.from_list(features)  # as `rdo align` does
    except ImportError:  # a GPU image whose pyarrow datasets cannot use: the Trainer takes a list as well
        train = features
    return RDOTrainer(model=model, args=cfg, data_collator=collator, train_dataset=train,
                      processing_class=tokenizer, method=method, callbacks=[timer])


def worker(spec: dict) -> dict:
    """Train each of `spec["runs"]` in turn (normally one), each on a freshly built model."""
    import gc

    import torch

    from benchmarks.synthetic import MODELS, preference_rows, word_tokenizer

    vocab = MODELS[spec["model"]]["vocab_size"]
    rows = preference_rows(spec["batch_size"] * spec["steps"], vocab, spec["prompt_len"], tuple(spec["response_len"]),
                           spec["seed"])
    tokenizer = word_tokenizer(vocab)
    results = []
    for i, run in enumerate(spec["runs"]):
        results.append(dict(train_one(dict(spec, **run), tokenizer, rows), first_in_process=i == 0))
        gc.collect()
        if spec["device"].startswith("cuda"):
            torch.cuda.empty_cache()
    return {"results": results}


def train_one(spec: dict, tokenizer, rows) -> dict:
    import torch

    from benchmarks.measure import current_rss_mib
    from benchmarks.synthetic import build_model, weights_checksum

    device = spec["device"]
    model = build_model(spec["model"], device, spec["seed"])
    checksum = weights_checksum(model)
    rss_model = current_rss_mib()

    timer = step_timer(device)
    load_start = os.getloadavg()[0]
    start = time.perf_counter()
    make = make_trl if spec["framework"] == "trl" else make_rdo
    trainer = make(spec, model, tokenizer, rows, timer)
    setup_s = time.perf_counter() - start
    start = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - start
    load_end = os.getloadavg()[0]

    history = [h for h in trainer.state.log_history if "loss" in h and "step" in h]
    a = trainer.args
    from benchmarks.measure import matmul_peak_gflops

    embed = model.get_input_embeddings().weight
    tied = model.get_output_embeddings().weight is embed
    n_params = sum(p.numel() for p in model.parameters())
    return {
        "n_params": n_params,
        # parameters that do matmul work per token: the input embedding is a lookup, unless tied to the head
        "n_params_matmul": n_params - (0 if tied else embed.numel()),
        "matmul_peak_gflops": matmul_peak_gflops(device),
        "weights_checksum": checksum,
        "attn_implementation": model.config._attn_implementation,
        "torch_threads": torch.get_num_threads(),
        "step_s": timer.step_s,
        "cpu_s": timer.cpu_s,
        "tokens": timer.tokens,
        "losses": [h["loss"] for h in history],
        "grad_norms": [h.get("grad_norm") for h in history],
        "setup_s": setup_s,
        "train_s": train_s,
        "load_avg_1m": [load_start, load_end],  # before setup, after training
        "rss_after_model_mib": rss_model,
        "peak_process_mib": max(timer.memory.before_mib, timer.memory.phase_mib),
        "peak_train_mib": timer.memory.phase_mib,
        "at_train_start_mib": timer.memory.at_start_mib,
        "peak_train_isolated": timer.memory.phase_is_isolated,
        "memory_kind": "cuda max_memory_allocated" if device.startswith("cuda") else "process peak RSS (getrusage)",
        "effective_args": {k: str(getattr(a, k, None)) for k in (
            "optim", "learning_rate", "lr_scheduler_type", "warmup_steps", "weight_decay", "max_grad_norm", "bf16",
            "gradient_checkpointing", "train_sampling_strategy", "per_device_train_batch_size", "max_steps",
            "beta", "max_length", "precompute_ref_log_probs", "padding_free", "pad_to_multiple_of", "alpha",
            "coef_normalize", "dataloader_num_workers", "prefix_sharing")},
    }


if __name__ == "__main__":
    worker_main(worker)
