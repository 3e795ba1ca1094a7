"""Content keys of a command's inputs: the one home that decides what a config's named files contain.

Every config field that names something to read declares its kind in its metadata
(`arg(..., content="model")`, rdo.config). `config_content` turns each such field into a digest of the
content it names, so a cache or a skipped stage keyed by it cannot outlive a change of that content:

- `model`: a local folder's config and weight files (`model_fingerprint`), or a hub id's commit;
  the field named by `revision=` in its metadata picks the hub revision.
- `dataset`: a local file's bytes, a local folder's files, or a hub dataset's name (its content is not
  visible offline; `rdo run`'s prepare stage copies it into the run, and the copy's bytes key from there on).
- `file`: a file's bytes (a template, a DeepSpeed JSON, a generations file, a sheet, a key).
- `module`: `module[:function]` -> the module's source file bytes (not the modules it imports).
- `output`: where results go; never part of a key.

The reference log-prob cache, resume checkpoints, cross-fitting fold models and `rdo run` stage keys all
call this; tests/test_content_keys.py fails when a config field that names a path declares no kind.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

from rdo.utils.fingerprint import digest, file_digest, model_fingerprint

KINDS = ("model", "dataset", "file", "module", "output")
# TrainingArguments' own fields that name files or folders (their metadata is not ours to declare)
TRAINER_FIELDS = {"deepspeed": "file", "fsdp_config": "file", "output_dir": "output", "logging_dir": "output",
                  "resume_from_checkpoint": "output", "hub_model_id": "output"}


def field_kind(f: dataclasses.Field) -> str | None:
    """The content kind a config field declares (None: a plain value)."""
    return f.metadata.get("content") or TRAINER_FIELDS.get(f.name)


def content_fields(cls) -> dict[str, dataclasses.Field]:
    """The fields of a config class that name something with content (outputs included)."""
    return {f.name: f for f in dataclasses.fields(cls) if field_kind(f)}


def content_of(kind: str, value, revision: str | None = None) -> str | None:
    """A digest of what `value` names, by `kind`; None for outputs and unset values."""
    if kind == "output" or value in (None, "", [], {}):
        return None
    if isinstance(value, (list, tuple)):
        return digest([content_of(kind, v, revision) for v in value])
    if isinstance(value, dict):  # e.g. --deepspeed given inline as a dict
        return digest(value)
    value = str(value)
    if kind == "module":
        return _module_digest(value)
    p = Path(value)
    if p.is_file():
        return file_digest(p)
    if p.is_dir():
        if kind == "model":
            try:
                return model_fingerprint(value)
            except ValueError:  # a folder without weights (a tokenizer, an adapter's base named elsewhere)
                pass
        return digest({str(f.relative_to(p)): file_digest(f) for f in sorted(p.rglob("*")) if f.is_file()})
    if kind == "model":
        try:
            return model_fingerprint(value, revision)  # a hub id, by the commit its revision resolves to
        except ValueError:
            return digest({"missing": value, "revision": revision})
    return digest({"name": value})  # a hub dataset id, or a file that does not exist (yet)


def _module_digest(spec: str) -> str:
    module, _, function = spec.partition(":")
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        found = None
    origin = found.origin if found is not None and found.origin not in (None, "built-in", "frozen") else None
    if origin is None and Path(module.replace(".", "/") + ".py").is_file():  # a module beside the run, not yet on sys.path
        origin = module.replace(".", "/") + ".py"
    return digest({"module": module, "function": function, "source": file_digest(origin) if origin else None})


def config_content(cfg=None, *, cls=None, values: dict | None = None, kinds: tuple[str, ...] = KINDS) -> dict[str, str]:
    """{field: content digest} for every set input field of `cfg` (or of `cls` filled from `values`)."""
    cls = cls or type(cfg)
    if values is not None:
        defaults = {f.name: _default(f) for f in dataclasses.fields(cls)}
        get = lambda name: values.get(name, defaults.get(name))  # noqa: E731
    else:
        get = lambda name: getattr(cfg, name, None)  # noqa: E731
    out = {}
    for name, f in content_fields(cls).items():
        kind = field_kind(f)
        if kind not in kinds:
            continue
        revision = get(f.metadata["revision"]) if "revision" in f.metadata else None
        key = content_of(kind, get(name), revision)
        if key is not None:
            out[name] = key
    return out


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def changed(old: dict, new: dict) -> list[str]:
    """Names whose value differs between two key dicts (added and removed ones included)."""
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
