"""`rdo run PIPELINE.yaml`: every stage of an experiment over one run folder, redoing only what changed.

Each stage is one rdo command (the same config class and function a user runs by hand, through
`rdo.cli.COMMANDS`), run in `<run_dir>/<stage>/` with its resolved config written to `config.yaml`
(`rdo <command> --config config.yaml` reruns it by hand). A stage's key is a content hash of its
command, its values and the bytes of its inputs (every file, folder, model or module its config names, by
rdo.utils.content, and the launcher's config files): a rerun skips a stage whose key is unchanged and whose outputs are there, and
redoes it when anything it reads changed. A stage that was interrupted keeps its folder (same key),
so the command resumes (`rdo score` from its shards, training from its checkpoints); a stage whose key
changed starts from an empty folder. `stages.json` lists every stage with its status and time.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import yaml

from rdo.utils import atomic
from rdo.config import RunConfig
from rdo.utils.content import config_content
from rdo.utils.fingerprint import digest, file_digest, model_fingerprint
from rdo.pipeline.stages import Builder, Stage, config_class, make_config

log = logging.getLogger("rdo.run")


def load_pipeline(cfg: RunConfig) -> tuple[Path, list[Stage]]:
    path = Path(cfg.pipeline)
    if not path.is_file():
        raise FileNotFoundError(f"{cfg.pipeline}: no such pipeline file")
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{cfg.pipeline}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(spec, dict):
        raise ValueError(f"{cfg.pipeline}: expected a mapping of sections at the top level")
    run_dir = cfg.run_dir or spec.get("run_dir")
    if not run_dir:
        raise ValueError(f"{cfg.pipeline}: set run_dir: (or pass --run_dir), the folder every stage writes into")
    run_dir = Path(run_dir).resolve()
    stages = Builder(spec, run_dir, cfg.pipeline).build()
    overrides = cfg.overrides
    for st in stages:  # a local copy (or a fixture) stands in for a named dataset
        if st.command == "prepare" and st.values.get("dataset_name") in overrides:
            st.values["dataset_name"] = st.inputs[0] = overrides[st.values["dataset_name"]]
            st.values.pop("dataset_config", None)
    return run_dir, stages


def select(stages: list[Stage], cfg: RunConfig) -> tuple[list[Stage], set[str]]:
    """(the stages to consider, those to redo even if unchanged)."""
    names = [s.name for s in stages]
    target = cfg.only or cfg.from_stage
    if target and target not in names:
        raise ValueError(f"no stage {target!r} in {cfg.pipeline}; its stages: {', '.join(names)}")
    if cfg.only:
        chosen = [stages[names.index(cfg.only)]]
    elif cfg.from_stage:
        chosen = stages[names.index(cfg.from_stage):]
    else:
        chosen = stages
    forced = {s.name for s in chosen} if cfg.force else ({target} if target else set())
    return chosen, forced


# --- keys -----------------------------------------------------------------------------------------

def fingerprint(path: str) -> str:
    """The content of one input: a file's bytes, a model folder's weights and config, any other folder's files, or a hub id."""
    p = Path(path)
    if p.is_file():
        return file_digest(p)
    if p.is_dir():
        try:
            return model_fingerprint(str(p))
        except ValueError:  # a folder without weights: all its files
            return digest({str(f.relative_to(p)): file_digest(f) for f in sorted(p.rglob("*")) if f.is_file()})
    return digest({"name": path})  # a hub id: the pipeline cannot see its content offline; its name keys it


def stage_key(stage: Stage, run_dir: Path) -> str:
    """Content hash of the command, its values (run folder spelt $RUN, so a moved run keeps its keys), the content
    of every input its config names (rdo.utils.content: data, models, templates, reward modules, DeepSpeed JSON),
    the builder's inputs and the launcher's files (an accelerate config)."""
    here = str(run_dir)
    values = yaml.safe_dump(stage.values, sort_keys=True).replace(here, "$RUN")
    inputs = {i.replace(here, "$RUN"): fingerprint(i) for i in stage.inputs}
    named = config_content(cls=config_class(stage.command)[0], values=stage.values)
    return digest({"command": stage.command, "values": values, "inputs": inputs, "named": named,
                   "launch": stage.launch, "launch_files": launch_content(stage.launch)})


def launch_content(launch: str | None) -> dict[str, str]:
    """The bytes of every file the launcher command names (`--config_file zero3.yaml`, a hostfile, ...)."""
    return {tok: file_digest(tok) for tok in shlex.split(launch or "") if Path(tok).is_file()}


def missing_inputs(stage: Stage, run_dir: Path) -> list[str]:
    return [i for i in stage.inputs if i.startswith(str(run_dir)) and not Path(i).exists()]


# --- running ----------------------------------------------------------------------------------------

def read_json(path: Path) -> dict | None:
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def execute(stage: Stage, folder: Path) -> None:
    """Run the stage's command: in this process, or under its launcher (accelerate/torchrun) as a subprocess."""
    if stage.launch:
        argv = [*shlex.split(stage.launch), "-m", "rdo.cli", *stage.command.split(), "--config", str(folder / "config.yaml")]
        log.info("%s: %s", stage.name, " ".join(argv))
        rc = subprocess.run(argv).returncode
        if rc != 0:
            raise ValueError(f"stage {stage.name}: `{' '.join(argv)}` exited with status {rc}")
        return
    cls, fn = config_class(stage.command)
    fn(make_config(stage, cls))


def run(cfg: RunConfig) -> dict:
    """Run (or with --dry-run, check) the pipeline; returns {stage name: status}."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    run_dir, stages = load_pipeline(cfg)
    chosen, forced = select(stages, cfg)
    if cfg.dry_run:
        from rdo.pipeline.check import dry_run

        return dry_run(cfg, run_dir, stages)
    run_dir.mkdir(parents=True, exist_ok=True)
    record_path = run_dir / "stages.json"
    previous = {s["name"]: s for s in (read_json(record_path) or {}).get("stages", [])}
    record = {s.name: previous.get(s.name, {"name": s.name, "command": s.command, "status": "pending", "seconds": None}) for s in stages}

    def save():
        atomic.write_json(record_path, {"run_dir": str(run_dir), "pipeline": str(Path(cfg.pipeline).resolve()),
                                        "stages": [record[s.name] for s in stages]})

    chosen_names = {s.name for s in chosen}
    for i, stage in enumerate(stages, 1):
        if stage.name not in chosen_names:
            continue
        folder = run_dir / stage.name
        missing = missing_inputs(stage, run_dir)
        if missing:
            raise ValueError(f"stage {stage.name}: input {missing[0]} is missing; run the stages before it first (drop --only/--from)")
        key = stage_key(stage, run_dir)
        done = read_json(folder / "stage.json") or {}
        outputs_there = all(Path(o).exists() for o in stage.outputs)
        if done.get("status") == "done" and done.get("key") == key and outputs_there and stage.name not in forced:
            log.info("[%d/%d] %s: unchanged, skipped", i, len(stages), stage.name)
            record[stage.name] |= {"status": "skipped", "key": key}
            save()
            continue
        if folder.exists() and (done.get("key") != key or (stage.name in forced and done.get("status") == "done")):
            shutil.rmtree(folder)  # made from other inputs, or asked to be redone: start clean (interrupted, same key: resume)
        elif done.get("status") in ("running", "failed"):
            log.info("[%d/%d] %s: resuming an interrupted run", i, len(stages), stage.name)
        folder.mkdir(parents=True, exist_ok=True)
        atomic.write_text(folder / "config.yaml", yaml.safe_dump(stage.values, sort_keys=False))
        state = {"key": key, "command": stage.command, "status": "running", "seconds": None}
        atomic.write_json(folder / "stage.json", state)
        record[stage.name] |= {"status": "running", "key": key}
        save()
        log.info("[%d/%d] %s: running `rdo %s --config %s`", i, len(stages), stage.name, stage.command, folder / "config.yaml")
        start = time.perf_counter()
        try:
            execute(stage, folder)
        except BaseException:
            state["status"] = record[stage.name]["status"] = "failed"
            atomic.write_json(folder / "stage.json", state)
            save()
            raise
        seconds = time.perf_counter() - start
        state |= {"status": "done", "seconds": seconds}
        atomic.write_json(folder / "stage.json", state)
        record[stage.name] |= {"status": "done", "seconds": seconds}
        save()
        log.info("[%d/%d] %s: done in %.1fs", i, len(stages), stage.name, seconds)
    return {name: r["status"] for name, r in record.items()}
