"""Exact resume: which checkpoint to continue from, and the per-row state a checkpoint carries.

Trainer restores the model, optimizer, scheduler, per-rank RNG and the data position. What it does
not know about is saved next to them by `rdo.train.trainer.SafeTrainer`:
- `rdo_config.json`: the resolved config, to warn when a resumed run's settings differ;
- `rdo_rows.json`: a digest of every row's coefficient weight, so a resumed run refuses data or
  coefficient options that would weight rows differently;
- `rdo_reference.safetensors`: the precomputed reference values by (`rdo_row`, `rdo_example`), so a
  resumed run reads them back instead of recomputing them (or trusting a cache that may be gone);
- `rdo_state.json`: a trainer's own state (the difference collator's random generator).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from rdo.utils import atomic
from rdo.data.convert import row_key
from rdo.utils.fingerprint import digest

log = logging.getLogger("rdo.train.resume")

CONFIG_FILE = "rdo_config.json"
ROWS_FILE = "rdo_rows.json"
REFERENCE_FILE = "rdo_reference.safetensors"
STATE_FILE = "rdo_state.json"  # a trainer's own extra state (SafeTrainer.checkpoint_state)
# Fields that may change between a run and its resumption without changing what is trained.
_VOLATILE = {"resume_from_checkpoint", "overwrite_output_dir", "logging_dir", "disable_tqdm", "report_to",
             "run_name", "output_dir", "push_to_hub", "hub_token", "dataloader_num_workers"}


def find_checkpoint(cfg) -> str | None:
    """The checkpoint to resume from: --resume_from_checkpoint PATH|true, else the newest one in --output_dir
    (unless --overwrite_output_dir). Leftovers of interrupted writes in --output_dir are removed first."""
    from transformers.trainer_utils import get_last_checkpoint

    out = Path(cfg.output_dir)
    if cfg.should_save:  # the main process; the others wait for it in Trainer's first barrier
        atomic.clean_leftovers(out)
    asked = cfg.resume_from_checkpoint
    if isinstance(asked, str) and asked.lower() in ("false", "no", ""):
        asked = None
    if isinstance(asked, str) and asked.lower() == "true":
        found = get_last_checkpoint(str(out)) if out.is_dir() else None
        if found is None:
            raise ValueError(f"--resume_from_checkpoint true: no checkpoint-N folder in {out}; drop the flag to start fresh")
        asked = found
    if asked:
        if not (Path(asked) / "trainer_state.json").is_file():
            raise FileNotFoundError(f"--resume_from_checkpoint {asked}: not a complete checkpoint (no trainer_state.json)")
        log.info("resuming from %s (--resume_from_checkpoint)", asked)
        return str(asked)
    found = get_last_checkpoint(str(out)) if out.is_dir() else None
    if found is None:
        return None
    if cfg.overwrite_output_dir:
        log.info("--overwrite_output_dir: starting fresh; checkpoints in %s will be replaced", out)
        return None
    log.info("resuming from %s, the newest checkpoint in --output_dir (--overwrite_output_dir starts fresh)", found)
    return found


def check_config(checkpoint: str, cfg) -> None:
    """Warn about every setting (the seed first) that differs from the checkpoint's run."""
    path = Path(checkpoint) / CONFIG_FILE
    if not path.is_file():
        log.warning("%s has no %s; cannot check the resumed settings", checkpoint, CONFIG_FILE)
        return
    old, new = json.loads(path.read_text()), json.loads(json.dumps(cfg.to_dict(), default=str))
    changed = sorted(k for k in old.keys() | new.keys() if k not in _VOLATILE and old.get(k) != new.get(k))
    if "seed" in changed:
        log.warning("resuming with --seed %s, but %s was trained with --seed %s: the run will not be the one it continues",
                    new.get("seed"), checkpoint, old.get("seed"))
    for k in changed:
        if k != "seed":
            log.warning("resuming with --%s %r, but %s was trained with %r", k, new.get(k), checkpoint, old.get(k))


def weights_digest(features: list[dict]) -> str:
    """Each row's weight and, for a method whose loss reads it (odpo, mmpo, rpo), its raw R."""
    return digest([[list(row_key(f)), f["rdo_weight"], *([f["reward_diff"]] if "reward_diff" in f else [])] for f in features])


def rows_state(features: list[dict], ref_columns: tuple[str, ...]) -> dict:
    """What a checkpoint keeps about the rows: the weights' digest and the reference values."""
    state = {"weights": weights_digest(features), "n": len(features)}
    if ref_columns and all(c in features[0] for c in ref_columns):
        keys = [row_key(f) for f in features]
        state["reference"] = {
            "rdo_row": torch.tensor([k[0] for k in keys]), "rdo_example": torch.tensor([k[1] for k in keys]),
            **{c: torch.tensor([float(f[c]) for f in features], dtype=torch.float64) for c in ref_columns},
        }
    return state


def write_rows_state(folder: Path, state: dict) -> None:
    from safetensors.torch import save_file

    atomic.write_json(folder / ROWS_FILE, {"weights": state["weights"], "n": state["n"]})
    if "reference" in state:
        with atomic.atomic_path(folder / REFERENCE_FILE) as tmp:
            save_file(state["reference"], str(tmp))


def check_weights(checkpoint: str, features: list[dict]) -> None:
    """The weights are a deterministic function of the data and options: refuse to resume if they changed."""
    path = Path(checkpoint) / ROWS_FILE
    if not path.is_file():
        log.warning("%s has no %s; cannot check the coefficient weights are those it was trained with", checkpoint, ROWS_FILE)
        return
    saved = json.loads(path.read_text())
    if saved["weights"] != weights_digest(features):
        raise ValueError(
            f"{checkpoint}: the coefficient weights of this data ({len(features)} rows) differ from the ones it was trained "
            f"with ({saved['n']} rows), or their R (odpo/mmpo/rpo): the data or a --coef_*/--alpha/--score_* option changed. "
            "Resume with the original ones, "
            "or start fresh with --overwrite_output_dir"
        )


def restore_reference(checkpoint: str, features: list[dict], columns: tuple[str, ...]) -> bool:
    """Put the checkpoint's reference values on `features`; False when it holds none for these rows."""
    from safetensors.torch import load_file

    path = Path(checkpoint) / REFERENCE_FILE
    if not columns or not path.is_file():
        return False
    saved = load_file(str(path))
    if any(c not in saved for c in columns):
        return False
    by_key = {k: i for i, k in enumerate(zip(saved["rdo_row"].tolist(), saved["rdo_example"].tolist()))}
    idx = [by_key.get(row_key(f)) for f in features]
    if any(i is None for i in idx):
        return False
    for c in columns:
        values = saved[c].tolist()
        for f, i in zip(features, idx):
            f[c] = values[i]
    log.info("reference log-probs: restored from %s (not recomputed)", path)
    return True


def load_checkpoint_state(checkpoint: str) -> dict:
    path = Path(checkpoint) / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}
