"""`rdo run --dry-run`: check every stage's config, the stage graph and the data formats, without training.

- each stage's command must be available, and its values must build its config class (which runs the
  command's own checks); device-dependent checks (bf16 on a machine without a GPU) are relaxed;
- each dataset's first rows are read (through `rdo prepare`'s conversion) and validated by
  `rdo.data.load_records`, with the model's tokenizer when it is available offline; the format's kind
  (pair / ranked / unpaired) must suit every stage that reads it (e.g. `--method rrhf` needs ranked rows or pairs).
What cannot be checked offline (a hub dataset or model that is not on this machine) is listed as skipped.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from rdo.utils import atomic
from rdo.config import RunConfig
from rdo.pipeline.stages import Stage, config_class, make_config

log = logging.getLogger("rdo.run")


def _config_ok(stage: Stage) -> None:

    try:
        cls, _ = config_class(stage.command)
    except ValueError as e:
        raise ValueError(f"stage {stage.name}: {e}") from None
    values = dict(stage.values)
    if stage.command in ("train-rm", "train-diff", "align"):
        import torch

        if not torch.cuda.is_available():  # bf16/fp16 need a GPU to pass TrainingArguments' device checks
            values.update(bf16=False, fp16=False, use_cpu=True)
        values.pop("deepspeed", None)  # checked as a file below, not loaded (DeepSpeed may not be installed here)
    make_config(Stage(stage.name, stage.command, values, stage.inputs, stage.outputs), cls)
    ds = stage.values.get("deepspeed")
    if ds and not Path(ds).is_file():
        raise ValueError(f"stage {stage.name}: deepspeed config {ds} not found")


def _tokenizer(model: str, notes: list[str]):
    from rdo.models import load_tokenizer

    try:
        return load_tokenizer(model)
    except Exception as e:  # noqa: BLE001 — a hub model not on this machine: validate without it
        notes.append(f"tokenizer of {model}: skipped, not available offline ({type(e).__name__}); rows are checked without it")
        return None


def _data_kind(stage: Stage, check_rows: int, tokenizer, notes: list[str]) -> str | None:
    """Validate the first rows of a prepare stage's dataset; returns their kind, or None when skipped."""
    from rdo.config import PrepareConfig
    from rdo.data import load_records
    from rdo.pipeline.prepare import prepared_rows

    cfg = make_config(stage, PrepareConfig)
    local = Path(cfg.dataset_name).exists()
    if not local:
        notes.append(f"{stage.name}: {cfg.dataset_name} is a hub dataset; not read offline (pass --dataset_override {cfg.dataset_name}=FILE to check a local copy)")
        return None
    rows = prepared_rows(cfg, limit=check_rows)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rows.jsonl"
        atomic.write_jsonl(path, rows)
        try:
            loaded = load_records(str(path), tokenizer=tokenizer)
        except ValueError as e:  # name the user's file, not the temporary copy
            raise ValueError(str(e).replace(str(path), f"{cfg.dataset_name} (first {len(rows)} rows, as prepared)")) from None
    log.info("%s: %s rows (%s) look right (first %d checked)", stage.name, loaded.fmt, loaded.kind, len(rows))
    return loaded.kind


def _kind_problem(stage: Stage, kind: str) -> str | None:
    from rdo.core.methods import get_method

    uses = stage.uses
    if "method" in uses:
        method = get_method(uses["method"])
        if kind not in method.data_kinds:
            return f"--method {method.name} needs {' or '.join(method.data_kinds)} rows, but data {uses['data']!r} holds {kind} rows"
        has_columns = "score_chosen_column" in stage.values
        if uses.get("scorer") == "data" and kind == "pair" and not has_columns:
            return (f"scorer 'data' on the pair rows of data {uses['data']!r} takes R from two score columns: set align.score_columns: "
                    "[<chosen's score>, <rejected's score>] (e.g. [score_chosen, score_rejected]), or score the pairs with a reward or difference model")
        if uses.get("scorer") == "data" and kind == "ranked" and has_columns:
            return f"align.score_columns is for pair rows; the ranked rows of data {uses['data']!r} give R from their own `scores`: drop it"
        if uses.get("scorer") == "data" and kind == "unpaired":
            return f"scorer 'data' takes R from the data's scores, but data {uses['data']!r} holds unpaired rows; score the pairs they came from"
    elif "needs" in uses and kind not in uses["needs"]:
        return f"`rdo {stage.command}` needs {' or '.join(uses['needs'])} rows, but data {uses['data']!r} holds {kind} rows"
    return None


def dry_run(cfg: RunConfig, run_dir: Path, stages: list[Stage]) -> dict:
    """Print one line per stage (ok, or what is wrong) and the notes; raise with the problems in one line."""
    model = next((s.values.get("model_name_or_path") for s in stages if s.command == "align"), None)
    notes: list[str] = []
    problems: dict[str, str] = {}
    for st in stages:
        try:
            _config_ok(st)
        except ValueError as e:
            problems[st.name] = str(e).splitlines()[0]
    tokenizer = _tokenizer(model, notes) if model else None
    kinds = {}
    for st in stages:
        if st.command == "prepare" and st.name not in problems:
            try:
                kinds[st.uses["data"]] = _data_kind(st, cfg.check_rows, tokenizer, notes)
            except (ValueError, FileNotFoundError) as e:
                problems[st.name] = str(e).splitlines()[0]
    for st in stages:
        kind = kinds.get(st.uses.get("data"))
        if kind and st.name not in problems and (p := _kind_problem(st, kind)):
            problems[st.name] = f"stage {st.name}: {p}"
    print(f"rdo run --dry-run {cfg.pipeline}: {len(stages)} stages in {run_dir}")
    for i, st in enumerate(stages, 1):
        print(f"  {i:2d}. {st.name:40s} rdo {st.command:14s} {'PROBLEM: ' + problems[st.name] if st.name in problems else 'ok'}")
    for n in notes:
        print(f"  note: {n}")
    if problems:
        first = next(problems[st.name] for st in stages if st.name in problems)  # the earliest stage's
        raise ValueError(f"{cfg.pipeline}: {len(problems)} stage(s) would fail; first: {first}")
    return {st.name: "ok" for st in stages}
