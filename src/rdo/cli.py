"""`rdo <command>`: flags or a YAML file -> the command's config dataclass -> the command. Nothing more."""

from __future__ import annotations

import os
import sys
from dataclasses import fields

COMMANDS = {
    # name: (module, config class, function, one-line description)
    "align": ("rdo.align", "AlignConfig", "align", "Train a policy with DPO/IPO/... weighted by reward difference coefficients."),
    "train-rm": ("rdo.train_scorers", "TrainRMConfig", "train_rm", "Train a pointwise Bradley-Terry reward model on any causal LM."),
    "train-diff": ("rdo.train_scorers", "TrainDiffConfig", "train_diff", "Train a reward difference model R(x, y1, y2) (paper Eqs. 4-6)."),
    "score": ("rdo.scoring", "ScoreConfig", "score", "Add reward differences (coefficients) to a preference dataset; resumable, cross-fitting."),
    "eval accuracy": ("rdo.evaluate.accuracy", "EvalAccuracyConfig", "eval_accuracy", "Pairwise accuracy of a scorer, with bootstrap CI and confidence bins."),
    "demo": ("rdo.demo", "DemoConfig", "demo", "The whole RDO pipeline on SmolLM2-135M-Instruct, offline, ending in a table with intervals."),
}


def _load(command: str):
    import importlib

    module, cfg_name, fn_name, _ = COMMANDS[command]
    config_module = importlib.import_module("rdo.config")
    return getattr(config_module, cfg_name), getattr(importlib.import_module(module), fn_name)


def parse_config(config_cls, argv: list[str], prog: str):
    """Build `config_cls` from `--config file.yaml` (optional) overridden by command-line flags."""
    import yaml
    from transformers import HfArgumentParser

    parser = HfArgumentParser(config_cls, prog=prog, description=config_cls.__doc__)
    parser.add_argument("--config", default=None, help="YAML file with any of these options; flags override it.")
    if "--config" in argv:
        path = argv[argv.index("--config") + 1]
        with open(path) as f:
            values = yaml.safe_load(f) or {}
        known = {f.name for f in fields(config_cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            parser.error(f"{path}: unknown option(s) {unknown}")
        parser.set_defaults(**values)
        # required fields given in YAML must not still be demanded on the command line
        for action in parser._actions:
            if action.dest in values:
                action.required = False
    # returns the dataclass, a namespace holding --config, then any unknown strings
    cfg, *_, rest = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    rest = [a for a in rest if a]
    if rest:
        parser.error(f"unrecognised arguments: {' '.join(rest)}")
    return cfg


def _usage(prefix: str = "") -> None:
    print("usage: rdo <command> [options]   (rdo <command> --help for its options)\n\ncommands:")
    for name, (*_, desc) in COMMANDS.items():
        if name.startswith(prefix):
            print(f"  {name:14s} {desc}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        _usage()
        return 0
    words = 2 if " ".join(argv[:2]) in COMMANDS else 1  # two-word commands such as "eval accuracy"
    command, rest = " ".join(argv[:words]), argv[words:]
    if command not in COMMANDS:
        family = [name for name in COMMANDS if name.startswith(argv[0] + " ")]
        if not family:
            print(f"rdo: unknown command {argv[0]!r}", file=sys.stderr)
        _usage(argv[0] + " " if family else "")
        return 0 if family and rest[:1] in (["-h"], ["--help"]) else 2
    config_cls, fn = _load(command)
    try:
        cfg = parse_config(config_cls, rest, prog=f"rdo {command}")
        fn(cfg)
    except (ValueError, FileNotFoundError) as e:  # bad settings or bad data: the message names what to fix
        if os.environ.get("RDO_DEBUG"):
            raise
        print(f"rdo {command}: error: {e}\n(set RDO_DEBUG=1 for the full traceback)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
