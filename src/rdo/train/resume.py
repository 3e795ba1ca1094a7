"""Exact resume: which checkpoint to continue from, and the per-row state a checkpoint carries.

Trainer restores the model, optimizer, scheduler, per-rank RNG and the data position. What it does
not know about is saved next to them by `rdo.train.trainer.SafeTrainer`:
- `rdo_config.json`: the resolved config, to warn when a resumed run's settings differ;
- `rdo_rows.json`: digests of every row's token ids and coefficient weight, the content of the models the
  run started from and the reference's content key, so a resumed run refuses data, options or models that
  changed (`check_rows`);
- `rdo_reference.safetensors`: the precomputed reference values by (`rdo_row`, `rdo_example`), read back
  only under the same content key instead of recomputing them (or trusting a cache that may be gone);
- `rdo_state.json`: a trainer's own state (the difference collator's random generator).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from rdo.utils import atomic
from rdo.data.convert import row_key, token_ids_digest
from rdo.utils.content import changed
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


def rows_state(features: list[dict], inputs: dict | None = None, reference_key: dict | None = None) -> dict:
    """What a checkpoint keeps to know its run: the rows' token ids and weights, the content of the models it
    started from (`rdo.utils.content`) and the content key its reference values were computed under."""
    state = {"n": len(features), "tokens": token_ids_digest(features), "inputs": inputs or {}, "reference_key": reference_key}
    if all("rdo_weight" in f for f in features):
        state["weights"] = weights_digest(features)
    if any("margin" in f for f in features):  # a reward model's per-pair margins (--margin_column)
        state["margins"] = digest(sorted(digest([list(row_key(f)), f.get("margin")]) for f in features))
    return state


def reference_values(features: list[dict], columns: tuple[str, ...]) -> dict:
    """The precomputed reference columns by (`rdo_row`, `rdo_example`), as a checkpoint stores them."""
    keys = [row_key(f) for f in features]
    return {"rdo_row": torch.tensor([k[0] for k in keys]), "rdo_example": torch.tensor([k[1] for k in keys]),
            **{c: torch.tensor([float(f[c]) for f in features], dtype=torch.float64) for c in columns}}


def write_rows_state(folder: Path, state: dict) -> None:
    from safetensors.torch import save_file

    atomic.write_json(folder / ROWS_FILE, {k: v for k, v in state.items() if k != "reference"})
    if "reference" in state:
        with atomic.atomic_path(folder / REFERENCE_FILE) as tmp:
            save_file(state["reference"], str(tmp))


def check_rows(checkpoint: str, state: dict) -> None:
    """Refuse to resume when what the run trains on is no longer what the checkpoint was trained on.

    `state` is `rows_state` of this run. Compared with the checkpoint's: the models' content (a folder
    overwritten between runs), the rows' token ids (edited data, another --max_length or template), their
    weights (data or --coef_*/--alpha options) and the reference's content key (weights, tokenizer,
    truncation, precision, method). Any change is a one-line error naming it; nothing is restored.
    """
    path = Path(checkpoint) / ROWS_FILE
    if not path.is_file():
        log.warning("%s has no %s; cannot check the data and models are those it was trained with", checkpoint, ROWS_FILE)
        return
    saved = json.loads(path.read_text())
    fresh = "Resume with the original ones, or start fresh with --overwrite_output_dir"
    if "tokens" not in saved:  # written before rdo keyed checkpoints by content: only the weights can be checked
        log.warning("%s predates content-keyed checkpoints; only the coefficient weights are checked", checkpoint)
    for name in changed(saved.get("inputs") or {}, state["inputs"]) if "inputs" in saved else []:
        raise ValueError(f"{checkpoint}: the content of --{name} changed since this checkpoint was written "
                         f"(its weights or config differ). {fresh}")
    if "tokens" in saved and saved["tokens"] != state["tokens"]:
        raise ValueError(
            f"{checkpoint}: the training rows' token ids differ from the ones it was trained on ({state['n']} rows now, "
            f"{saved['n']} then): the data, --max_length / --max_prompt_length or the tokenizer changed. {fresh}")
    if saved.get("weights") != state.get("weights"):
        raise ValueError(
            f"{checkpoint}: the coefficient weights of this data ({state['n']} rows) differ from the ones it was trained "
            f"with ({saved['n']} rows), or their R (odpo/mmpo/rpo): the data or a --coef_*/--alpha/--score_* option changed. {fresh}")
    if saved.get("margins") != state.get("margins"):
        raise ValueError(f"{checkpoint}: the rows' margins (--margin_column) differ from the ones it was trained with. {fresh}")
    old_ref, new_ref = saved.get("reference_key"), state.get("reference_key")
    if "tokens" in saved and old_ref != new_ref:
        parts = changed(old_ref or {}, new_ref or {}) if old_ref and new_ref else ["precomputed or not"]
        raise ValueError(f"{checkpoint}: the reference log-probs it was trained against were computed under another key "
                         f"({', '.join(parts)} changed). {fresh}")


def restore_reference(checkpoint: str, features: list[dict], columns: tuple[str, ...], reference_key: dict | None) -> bool:
    """Put the checkpoint's reference values on `features` when they were computed under `reference_key`
    (the content key of this run's reference: `check_rows` has refused any other); False when it holds none."""
    from safetensors.torch import load_file

    path = Path(checkpoint) / REFERENCE_FILE
    if not columns or not path.is_file():
        return False
    saved_key = json.loads((Path(checkpoint) / ROWS_FILE).read_text()).get("reference_key") if (Path(checkpoint) / ROWS_FILE).is_file() else None
    if saved_key is None or saved_key != reference_key:
        log.info("reference log-probs: %s holds values of another or unknown key; computing them instead", checkpoint)
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
    log.info("reference log-probs: restored from %s (same content key; not recomputed)", path)
    return True


def load_checkpoint_state(checkpoint: str) -> dict:
    path = Path(checkpoint) / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}
