"""Checks that `rdo align` saves, and that `rdo score` / the reference pass shard, correctly under an engine.

Run by check_engines.sh on a lent GPU machine (benchmarks/gpu/README.md); every step also runs on CPU with
one process or plain DDP, which is how tests/test_gpu_check_script.py tests the comparisons here.

  python check_engines.py prepare WORK                  a tiny Llama, preference data, a reward model (1 process)
  <launcher> check_engines.py train WORK NAME [ARGS]    DPO+rc (α = 1) with `rdo align ARGS`; records the final
                                                        weights' logits on a probe batch through the engine's forward
  python check_engines.py verify WORK NAME              (a) / (b): the saved folder reloads with full-size tensors
                                                        and gives the probe logits the trainer's final weights gave
  python check_engines.py same-reference WORK A B       (d): run B's reference cache equals run A's
  python check_engines.py same-scores WORK A.jsonl B.jsonl   (c): two `rdo score` outputs hold the same rows
  python check_engines.py verdict WORK OUT.json         every check's result in one JSON

Each check writes WORK/results/<check>.json: {"check", "ok", "detail"...}; a step that crashed leaves none,
and the verdict lists it as missing.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

PROBE = ["say a: aaaa", "say h: hh", "say c: q and more words"]
TOL = {"rtol": 1e-4, "atol": 1e-4}  # fp32 everywhere (the launcher passes --mixed_precision no)


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def write_result(work: Path, check: str, ok: bool, **detail) -> dict:
    result = {"check": check, "ok": bool(ok), **detail}
    (work / "results").mkdir(parents=True, exist_ok=True)
    (work / "results" / f"{check}.json").write_text(json.dumps(result, indent=1))
    print(f"[check_engines] {check}: {'ok' if ok else 'FAILED'} {json.dumps(detail)[:400]}", flush=True)
    return result


def pairs(n: int, seed: int) -> list[dict]:
    """A learnable preference (the chosen answer repeats the prompt's letter) with reward differences."""
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        c = rng.choice("abcdefghij")
        rows.append({"id": f"r{i}", "prompt": f"say {c}:", "chosen": c * rng.randint(2, 6),
                     "rejected": rng.choice("klmnopq") * rng.randint(1, 5), "rdo_reward_diff": round(rng.uniform(0.2, 3), 3)})
    return rows


def prepare(work: Path) -> None:
    from rdo.cli import main
    from rdo.tiny import build_tiny_model

    work.mkdir(parents=True, exist_ok=True)
    build_tiny_model(work / "model")
    (work / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs(24, seed=0)))
    (work / "held.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs(13, seed=1)))  # odd: unequal shares
    assert main(["train-rm", "--model_name_or_path", str(work / "model"), "--dataset_name", str(work / "pairs.jsonl"),
                 "--output_dir", str(work / "rm"), "--use_cpu", "true", "--report_to", "none", "--disable_tqdm", "true",
                 "--max_steps", "3", "--per_device_train_batch_size", "4", "--save_strategy", "no"]) == 0


def probe_batch(tokenizer) -> dict:
    enc = tokenizer(PROBE, return_tensors="pt", padding=True)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def train(work: Path, name: str, extra: list[str]) -> None:
    """`rdo align` under whatever launched this process, recording the probe logits of the final weights.

    The logits come from the engine's own forward (the DeepSpeed engine, the FSDP module, DDP), run on every
    rank just before the final save, so they are what the trainer holds, independent of the save path.
    """
    import rdo.train.align
    from rdo.cli import main
    from rdo.models import load_tokenizer

    run = work / name
    real_save = rdo.train.align.save_trained

    def save_with_probe(trainer, *args, **kwargs):
        model = trainer.model_wrapped
        model.eval()
        batch = {k: v.to(trainer.args.device) for k, v in probe_batch(load_tokenizer(str(work / "model"))).items()}
        with torch.no_grad():
            logits = model(**batch, use_cache=False).logits.float().cpu()
        if rank() == 0:
            run.mkdir(parents=True, exist_ok=True)
            torch.save({"logits": logits, "world_size": trainer.args.world_size,
                        "engine": type(model).__name__}, run / "probe.pt")
        return real_save(trainer, *args, **kwargs)

    rdo.train.align.save_trained = save_with_probe
    argv = ["align", "--model_name_or_path", str(work / "model"), "--dataset_name", str(work / "pairs.jsonl"),
            "--output_dir", str(run / "out"), "--overwrite_output_dir", "true", "--report_to", "none", "--disable_tqdm", "true", "--alpha", "1.0", "--learning_rate", "1e-3",
            "--per_device_train_batch_size", "2", "--max_steps", "4", "--save_strategy", "no", "--seed", "0", *extra]
    if "simpo" not in extra and "--precompute_ref" not in extra:  # a cached reference: (d) compares it
        argv += ["--ref_cache_dir", str(run / "cache")]
    rc = main(argv)
    if rank() == 0 and rc != 0:
        write_result(work, f"train-{name}", False, error=f"rdo align exited {rc}", argv=argv)
    elif rank() == 0:
        write_result(work, f"train-{name}", True)
    sys.exit(rc)


def verify(work: Path, name: str) -> dict:
    """(a)/(b): every saved tensor is full-size and finite, and the reloaded folder gives the trainer's logits."""
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    from rdo.models import load_tokenizer

    out, check = work / name / "out", f"save-{name}"
    files = sorted(out.glob("*.safetensors"))
    if not (work / name / "probe.pt").is_file():
        return write_result(work, check, False, error="no probe.pt: the training run did not reach the final save")
    if not files or not (out / "config.json").is_file():
        return write_result(work, check, False, error=f"{out}: no config.json or *.safetensors", files=sorted(p.name for p in out.glob("*")))
    initial = AutoModelForCausalLM.from_pretrained(work / "model", dtype=torch.float32).eval()
    want = {k: tuple(v.shape) for k, v in initial.state_dict().items()}
    saved = {}
    for f in files:
        with safe_open(str(f), "pt") as st:
            saved.update({k: st.get_tensor(k) for k in st.keys()})
    bad_shape = {k: [list(v.shape), list(want.get(k, ()))] for k, v in saved.items() if tuple(v.shape) != want.get(k)}
    tied = {k for k in want if k not in saved and getattr(initial.config, "tie_word_embeddings", False) and "lm_head" in k}
    missing = sorted(set(want) - set(saved) - tied)
    nonfinite = sorted(k for k, v in saved.items() if not torch.isfinite(v.float()).all())
    lora_left = sorted(k for k in saved if "lora" in k)
    probe = torch.load(work / name / "probe.pt", weights_only=True)
    trained = probe["logits"]
    batch = probe_batch(load_tokenizer(str(work / "model")))
    reload_error, err = None, float("inf")
    with torch.no_grad():
        before = initial(**batch).logits.float()
        try:
            reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
            err = float((reloaded(**batch).logits.float() - trained).abs().max())
        except Exception as e:  # e.g. a size mismatch: recorded, and the check fails
            reload_error = f"{type(e).__name__}: {str(e)[:300]}"
    moved = float((before - trained).abs().max())
    close = err <= TOL["atol"] + TOL["rtol"] * float(trained.abs().max())
    ok = not bad_shape and not missing and not nonfinite and not lora_left and close and moved > 1e-3
    return write_result(work, check, ok, tensors=len(saved), bad_shape=bad_shape, missing=missing, nonfinite=nonfinite,
                        lora_keys_left=lora_left[:5], reload_error=reload_error, max_abs_logit_diff_saved_vs_trainer=err,
                        max_abs_logit_diff_initial_vs_trainer=moved, world_size=probe["world_size"], engine=probe["engine"])


def reference_values(run: Path) -> dict:
    caches = sorted((run / "cache").glob("*.pt"))
    if len(caches) != 1:
        raise ValueError(f"{run / 'cache'}: expected one reference cache file, found {len(caches)}")
    return torch.load(caches[0], weights_only=True)


def same_reference(work: Path, a: str, b: str) -> dict:
    """(d): run b's (sharded) reference log-probs equal run a's, row by row."""
    check = f"reference-{b}-vs-{a}"
    try:
        va, vb = reference_values(work / a), reference_values(work / b)
    except (ValueError, FileNotFoundError) as e:
        return write_result(work, check, False, error=str(e))
    if not torch.equal(va["rdo_row"], vb["rdo_row"]):
        return write_result(work, check, False, error="the rows differ (order or set)")
    cols = sorted(k for k in va if k.startswith("ref_"))
    diffs = {c: float((va[c] - vb[c]).abs().max()) for c in cols}
    ok = bool(cols) and set(cols) == {k for k in vb if k.startswith("ref_")} and all(
        torch.allclose(vb[c], va[c], rtol=1e-5, atol=1e-4) for c in cols)
    return write_result(work, check, ok, rows=int(va["rdo_row"].numel()), max_abs_diff=diffs)


def same_scores(work: Path, a: Path, b: Path) -> dict:
    """(c): two `rdo score` outputs hold the same rows, in the same order, with the same values."""
    check = f"score-{b.stem}-vs-{a.stem}"
    try:
        ra, rb = ([json.loads(x) for x in p.read_text().splitlines()] for p in (a, b))
    except FileNotFoundError as e:
        return write_result(work, check, False, error=str(e))
    if [r.get("id") for r in ra] != [r.get("id") for r in rb] or any(x.keys() != y.keys() for x, y in zip(ra, rb)):
        return write_result(work, check, False, error="rows, order or columns differ", rows=[len(ra), len(rb)])
    diff = max((abs(x["rdo_reward_diff"] - y["rdo_reward_diff"]) for x, y in zip(ra, rb)), default=float("inf"))
    return write_result(work, check, bool(ra) and diff <= 1e-4, rows=len(ra), max_abs_diff=diff)


def verdict(work: Path, out: Path, expected: list[str]) -> dict:
    results = {p.stem: json.loads(p.read_text()) for p in sorted((work / "results").glob("*.json"))}
    missing = [c for c in expected if c not in results]
    summary = {"ok": not missing and all(r["ok"] for r in results.values()) and bool(results),
               "failed": sorted(c for c, r in results.items() if not r["ok"]), "missing": missing, "results": results}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1))
    print(f"[check_engines] verdict: {'ok' if summary['ok'] else 'FAILED'}; failed {summary['failed']}, missing {missing}")
    return summary


def main(argv: list[str]) -> int:
    cmd, work, rest = argv[0], Path(argv[1]), argv[2:]
    if cmd == "prepare":
        prepare(work)
    elif cmd == "train":
        train(work, rest[0], rest[1:])
    elif cmd == "verify":
        return 0 if verify(work, rest[0])["ok"] else 1
    elif cmd == "same-reference":
        return 0 if same_reference(work, rest[0], rest[1])["ok"] else 1
    elif cmd == "same-scores":
        return 0 if same_scores(work, Path(rest[0]), Path(rest[1]))["ok"] else 1
    elif cmd == "verdict":
        return 0 if verdict(work, Path(rest[0]), rest[1:])["ok"] else 1
    else:
        raise SystemExit(f"unknown command {cmd!r}; see the docstring")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
