"""A pipeline YAML -> the ordered list of stages `rdo run` executes (the stage graph).

Every stage is one rdo command with its values; its outputs live in `<run_dir>/<stage name>/`.
The pipeline decides where outputs go, so a value from the YAML may name an output path only
relative to the stage folder: absolute paths and `..` are refused (they could escape the run folder).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path

SECTIONS = ("run_dir", "model", "launch", "training", "inference", "data", "scorers", "score", "eval_accuracy",
            "align", "generate", "eval_reward", "eval_judge", "report")
OUTPUT_KEYS = ("output", "output_dir", "logging_dir", "ref_cache_dir", "cache_dir")
TRAINING_COMMANDS = ("train-rm", "train-diff", "align")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class Stage:
    name: str
    command: str  # a key of rdo.cli.COMMANDS
    values: dict  # the command's config values, as `--config` YAML takes them
    inputs: list[str]  # files, folders or hub ids whose content keys this stage
    outputs: list[str]  # what must exist once it is done
    uses: dict = field(default_factory=dict)  # for --dry-run's data checks: {"data": name, "needs": kinds, ...}
    launch: str | None = None  # e.g. "accelerate launch --config_file ..." for training stages


def config_class(command: str):
    """(config class, function) of an rdo command, or a ValueError saying it is not available."""
    from rdo.commands import load

    return load(command)


def make_config(stage: Stage, cls):
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(stage.values) - known)
    if unknown:
        raise ValueError(f"stage {stage.name}: unknown option(s) {unknown} for `rdo {stage.command}`")
    try:
        return cls(**stage.values)
    except ValueError as e:
        raise ValueError(f"stage {stage.name} (rdo {stage.command}): {e}") from None


def _fields_of(command: str) -> set[str] | None:
    try:
        return {f.name for f in fields(config_class(command)[0])}
    except ValueError:
        return None


def _pick(block: dict, command: str) -> dict:
    """The options of a shared block (training:, inference:) that this command has."""
    names = _fields_of(command)
    return dict(block) if names is None else {k: v for k, v in block.items() if k in names}


def check_name(where: str, name) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise ValueError(f"{where}: {name!r} is not a usable name (letters, digits, _ . -; it names a folder of the run)")
    return name


def check_relative(where: str, key: str, value) -> None:
    """An output path from the config must stay inside its stage folder."""
    p = Path(str(value))
    if p.is_absolute() or ".." in p.parts:
        raise ValueError(f"{where}: {key} {value!r} points outside the run folder; give a path relative to the stage folder, without '..'")


class Builder:
    """Reads the pipeline spec and appends stages in execution order."""

    def __init__(self, spec: dict, run_dir: Path, source: str):
        unknown = sorted(set(spec) - set(SECTIONS))
        if unknown:
            raise ValueError(f"{source}: unknown section(s) {unknown}; known: {list(SECTIONS)}")
        self.spec, self.run, self.source = spec, run_dir, source
        self.model = spec.get("model")
        self.training, self.inference = spec.get("training") or {}, spec.get("inference") or {}
        self.stages: list[Stage] = []
        self.prepared: dict[str, str] = {}  # data name -> prepared file
        self.scorers: dict[str, str] = {}  # scorer name -> folder

    def section(self, name: str, default=None):
        value = self.spec.get(name, default)
        if value is not None and not isinstance(value, (dict, bool)):
            raise ValueError(f"{self.source}: section {name!r} must be a mapping")
        return value

    def add(self, name: str, command: str, values: dict, inputs: list[str], outputs: list[str], args: dict | None = None, **uses) -> Stage:
        check_name(f"{self.source}: stage", name)
        if any(s.name == name for s in self.stages):
            raise ValueError(f"{self.source}: two stages are named {name!r}")
        folder = self.run / name
        values = dict(values)
        for key, value in (args or {}).items():
            if key in OUTPUT_KEYS and value is not None:
                check_relative(f"{self.source}: stage {name}", key, value)
                value = str(folder / value)
            values[key] = value
        stage = Stage(name, command, values, inputs, outputs, uses,
                      self.spec.get("launch") if command in TRAINING_COMMANDS else None)
        self.stages.append(stage)
        return stage

    def data(self, name, where: str) -> str:
        if name not in self.prepared:
            raise ValueError(f"{self.source}: {where} names data {name!r}, but the data section has only {sorted(self.prepared)}")
        return self.prepared[name]

    def scorer(self, name, where: str) -> str:
        if name not in self.scorers:
            raise ValueError(f"{self.source}: {where} names scorer {name!r}, but the scorers section has only {sorted(self.scorers)}")
        return self.scorers[name]

    # -- the stages, in order -------------------------------------------------------------------

    def build(self) -> list[Stage]:
        if not self.model:
            raise ValueError(f"{self.source}: set model: (the policy to align: a local folder or a hub id)")
        self._prepare()
        self._scorers()
        scored = self._score()
        self._eval_accuracy()
        aligned = self._align(scored)
        generations = self._generate(aligned)
        self._eval_reward(generations)
        self._eval_judge(generations, aligned)
        report = self.section("report", True)
        if report is not False:
            args = report if isinstance(report, dict) else {}
            if "output_dir" in args or "run_dir" in args:
                raise ValueError(f"{self.source}: report: run_dir and output_dir are set by the pipeline (report/ in the run folder)")
            self.add("report", "report", {"run_dir": str(self.run), "output_dir": str(self.run / "report")},
                     [str(self.run / s.name / "stage.json") for s in self.stages], [str(self.run / "report" / "report.html")], args)
        return self.stages

    def _prepare(self):
        data = self.section("data") or {}
        if not data:
            raise ValueError(f"{self.source}: the data section is empty; name at least one dataset (e.g. train: {{dataset_name: ...}})")
        for name, d in data.items():
            check_name(f"{self.source}: data", name)
            if isinstance(d, str):
                d = {"dataset_name": d}
            if not isinstance(d, dict) or "dataset_name" not in d:
                raise ValueError(f"{self.source}: data {name!r} needs dataset_name (a file, a save_to_disk folder or a hub id)")
            if "output" in d:
                raise ValueError(f"{self.source}: data {name!r}: output is set by the pipeline (prepare_{name}/data.jsonl in the run folder)")
            out = str(self.run / f"prepare_{name}" / "data.jsonl")
            self.add(f"prepare_{name}", "prepare", {"output": out}, [str(d["dataset_name"])], [out], d, data=name)
            self.prepared[name] = out

    def _scorers(self):
        for name, s in (self.section("scorers") or {}).items():
            check_name(f"{self.source}: scorer", name)
            if not isinstance(s, dict):
                raise ValueError(f"{self.source}: scorer {name!r} must be a mapping with command: train-rm|train-diff (or path:)")
            if "path" in s:  # an existing rdo scorer folder
                self.scorers[name] = str(s["path"])
                continue
            command = s.get("command")
            if command not in ("train-rm", "train-diff"):
                raise ValueError(f"{self.source}: scorer {name!r}: command must be train-rm or train-diff, got {command!r}")
            data = self.data(s.get("data", "train"), f"scorer {name!r}")
            out = str(self.run / f"train_{name}" / "model")
            values = _pick(self.training, command) | {"model_name_or_path": s.get("model", self.model), "dataset_name": data, "output_dir": out}
            inputs = [data, values["model_name_or_path"]]
            if s.get("eval_data"):
                values["eval_dataset_name"] = self.data(s["eval_data"], f"scorer {name!r}")
                values["eval_dataset_split"] = "train"
                inputs.append(values["eval_dataset_name"])
            self.add(f"train_{name}", command, values, inputs, [out], s.get("args"), data=s.get("data", "train"), needs=("pair", "ranked"))
            self.scorers[name] = out

    def _score(self) -> dict[str, str]:
        """Scored copies of the align data, one per scorer the align sweep uses."""
        align, score = self.section("align") or {}, self.section("score") or {}
        if not (align or score):
            return {}
        data_name = score.get("data", align.get("data", "train"))
        data = self.data(data_name, "score")
        scored = {}
        used = [s for s in align.get("scorers", []) if s != "data"] if align else list(self.scorers)
        for name in used:
            folder = self.scorer(name, "align.scorers")
            out = str(self.run / f"score_{name}" / "scored.jsonl")
            values = _pick(self.inference, "score") | {"scorer": folder, "dataset_name": data, "output": out, "overwrite": True}
            self.add(f"score_{name}", "score", values, [folder, data], [out], score.get("args"), data=data_name, needs=("pair", "ranked"))
            scored[name] = out
        return scored

    def _eval_accuracy(self):
        ev = self.section("eval_accuracy")
        if not ev:
            return
        data_name = ev.get("data", "test")
        data = self.data(data_name, "eval_accuracy")
        for name in ev.get("scorers", list(self.scorers)):
            folder = self.scorer(name, "eval_accuracy.scorers")
            out = str(self.run / f"eval_accuracy_{name}" / "accuracy.json")
            values = _pick(self.inference, "eval accuracy") | {"scorer": folder, "dataset_name": data, "dataset_split": "train", "output": out}
            self.add(f"eval_accuracy_{name}", "eval accuracy", values, [folder, data], [out], ev.get("args"), data=data_name, needs=("pair", "ranked"))

    def _align(self, scored: dict[str, str]) -> list[tuple[str, str, float, str | None]]:
        """One stage per (method, α, scorer); α = 0 is the plain method, run once per method, except for methods whose
        loss reads R (odpo, mmpo, rpo), which need a scorer at every α. Returns (stage, method, α, scorer).

        Scorer `data` takes R from the data itself: ranked rows' `scores`, or for pairs the two columns
        `align.score_columns: [chosen's, rejected's]` names (e.g. UltraFeedback's score_chosen, score_rejected).
        """
        align = self.section("align")
        if not align:
            return []
        data_name = align.get("data", "train")
        data = self.data(data_name, "align")
        methods, alphas = align.get("methods", ["dpo"]), align.get("alphas", [0.0])
        scorers = align.get("scorers", [])
        if any(a != 0 for a in alphas) and not scorers:
            raise ValueError(f"{self.source}: align.alphas has α > 0 but align.scorers is empty; name the scorer(s) whose R weights the loss (or 'data' for the data's own scores)")
        if not scorers and (r_methods := [m for m in methods if _reads_reward_diff(m)]):
            raise ValueError(f"{self.source}: align.methods {r_methods} read R in their loss at every α, but align.scorers is empty; name the scorer(s) whose R they read (or 'data')")
        score_columns = align.get("score_columns")
        if score_columns is not None and not (isinstance(score_columns, list) and len(score_columns) == 2 and all(isinstance(c, str) for c in score_columns)):
            raise ValueError(f"{self.source}: align.score_columns must name two columns, [chosen's score, rejected's score], got {score_columns!r}")
        out = []
        for method in methods:
            check_name(f"{self.source}: align.methods", method)
            for alpha in alphas:
                if not isinstance(alpha, (int, float)) or isinstance(alpha, bool):
                    raise ValueError(f"{self.source}: align.alphas: {alpha!r} is not a number")
                for scorer in ([None] if alpha == 0 and not _reads_reward_diff(method) else scorers):
                    name = f"align_{method}_a{alpha:g}" + (f"_{scorer}" if scorer else "")
                    source = data if scorer in (None, "data") else scored[scorer]
                    folder = str(self.run / name / "model")
                    values = _pick(self.training, "align") | {
                        "model_name_or_path": self.model, "dataset_name": source, "method": method, "alpha": float(alpha),
                        "output_dir": folder,
                    }
                    if scorer == "data" and score_columns:  # pairs: R = the data's chosen score - its rejected score
                        values["score_chosen_column"], values["score_rejected_column"] = score_columns
                    if _needs_reference(method):
                        values["ref_cache_dir"] = str(self.run / "ref_cache")  # one cache for the whole sweep
                    inputs = [source, self.model]
                    if align.get("eval_data"):
                        values["eval_dataset_name"] = self.data(align["eval_data"], "align.eval_data")
                        values["eval_dataset_split"] = "train"
                        inputs.append(values["eval_dataset_name"])
                    args = {**(align.get("args") or {}), **((align.get("method_args") or {}).get(method) or {})}
                    if "ref_cache_dir" in args:
                        raise ValueError(f"{self.source}: align: ref_cache_dir is set by the pipeline (one cache for the sweep, in the run folder)")
                    self.add(name, "align", values, inputs, [folder], args, data=data_name, method=method, alpha=alpha, scorer=scorer)
                    out.append((name, method, alpha, scorer))
        return out

    def _generate(self, aligned) -> dict[str, str]:
        gen = self.section("generate")
        if not gen:
            return {}
        data_name = gen.get("data", "test")
        data = self.data(data_name, "generate")
        models = ([("base", self.model)] if gen.get("base", True) else []) + [(a[0], str(self.run / a[0] / "model")) for a in aligned]
        outs = {}
        for label, model in models:
            name = f"generate_{label}"
            out = str(self.run / name / f"{label}.jsonl")  # eval reward / judge name each file by its stem
            values = _pick(self.inference, "generate") | {"model_name_or_path": model, "dataset_name": data, "output": out}
            self.add(name, "generate", values, [model, data], [out], gen.get("args"), data=data_name)
            outs[label] = out
        return outs

    def _eval_reward(self, generations: dict[str, str]):
        ev = self.section("eval_reward")
        if not ev or not generations:
            return
        scorers = [self.scorer(s, "eval_reward.scorers") for s in ev.get("scorers", [])] + list(ev.get("scorer_paths", []))
        reward_fn = list(ev.get("reward_fn", []))
        if not scorers and not reward_fn:
            raise ValueError(f"{self.source}: eval_reward needs scorers: (names from the scorers section), scorer_paths: or reward_fn:")
        out = str(self.run / "eval_reward" / "reward.json")
        values = _pick(self.inference, "eval reward") | {"generations": list(generations.values()), "output": out}
        if scorers:
            values["scorer"] = scorers
        if reward_fn:
            values["reward_fn"] = reward_fn
        self.add("eval_reward", "eval reward", values, [*generations.values(), *scorers], [out], ev.get("args"))

    def _eval_judge(self, generations: dict[str, str], aligned):
        ev = self.section("eval_judge")
        if not ev or not generations:
            return
        pairs = ev.get("pairs", "auto")
        if pairs == "auto":  # every +rc policy against the plain one of its method; a method reading R (no plain run) against plain DPO
            plain = {m: n for n, m, a, sc in aligned if a == 0 and sc is None}
            pairs = [[n, plain.get(m, plain.get("dpo"))] for n, m, a, sc in aligned if sc is not None and plain.get(m, plain.get("dpo"))]
        for pair in pairs:
            if not (isinstance(pair, list) and len(pair) == 2 and all(p in generations for p in pair)):
                raise ValueError(f"{self.source}: eval_judge.pairs: {pair!r} must name two generated models from {sorted(generations)}")
            a, b = pair
            name = f"eval_judge_{a}_vs_{b}"
            out = str(self.run / name / "judge.json")
            values = {"generations_a": generations[a], "generations_b": generations[b], "output": out,
                      "cache_dir": str(self.run / "judge_cache")}  # one cache: no call is paid for twice
            args = dict(ev.get("args") or {})
            if "cache_dir" in args:
                raise ValueError(f"{self.source}: eval_judge: cache_dir is set by the pipeline (one cache in the run folder)")
            self.add(name, "eval judge", values, [generations[a], generations[b]], [out], args)


def _reads_reward_diff(method: str) -> bool:
    """Whether `rdo align --method` reads R in its loss (at every α), so that even α = 0 needs a scorer."""
    from rdo.core.methods import get_method

    try:
        return get_method(method).reads_reward_diff
    except (KeyError, ValueError):  # an unknown method is reported by the align config's own check
        return False


def _needs_reference(method: str) -> bool:
    """Whether `rdo align --method` reads a reference (RRHF and SimPO do not, and refuse --ref_* options)."""
    from rdo.core.methods import get_method

    try:
        return get_method(method).needs_reference
    except (KeyError, ValueError):  # an unknown method is reported by the align config's own check
        return False
