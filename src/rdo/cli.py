"""`rdo <command>`: flags or a YAML file -> the command's config dataclass -> the command. Nothing more."""

from __future__ import annotations

import os
import sys
from dataclasses import fields

from rdo.commands import COMMANDS, POSITIONAL, load


def parse_config(config_cls, argv: list[str], prog: str, positional: str | None = None):
    """Build `config_cls` from `--config file.yaml` (optional) overridden by command-line flags.

    The YAML values become the parser's defaults (argparse's own mechanism), so any flag given on the
    command line wins, and values go through the same type conversion as flags. HfArgumentParser's
    `parse_yaml_file` cannot be used alone: it builds the dataclass from the file without any flags.
    """
    parser = build_parser(config_cls, prog)
    argv = explicit_bools(parser, argv)
    if positional:
        argv = positional_first(parser, argv, positional)
    path = _config_path(argv)
    if path is not None:
        values = read_yaml_options(config_cls, path, parser)
        parser.set_defaults(**values)
        for action in parser._actions:  # required fields given in the file must not still be demanded as flags
            if action.dest in values:
                action.required = False
    _, rest = parser.parse_known_args(argv)  # before building the config, whose checks would speak first
    rest = [a for a in rest if a]
    if rest:
        parser.error(f"unrecognised arguments: {' '.join(rest)}")
    # returns the dataclass, then a namespace holding --config
    cfg, _ = parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)
    return cfg


# field metadata that is rdo's own (rdo.utils.content), not an argparse keyword
_OWN_METADATA = ("content", "revision")
# what transformers' string_to_bool reads as a boolean flag's value
_BOOL_WORDS = {"true", "false", "yes", "no", "t", "f", "y", "n", "1", "0"}


def build_parser(config_cls, prog: str):
    """The command's parser: one flag per field, its help the field's one line, plus --config."""
    import copy
    from types import MappingProxyType

    from transformers import HfArgumentParser

    class Parser(HfArgumentParser):
        @staticmethod
        def _parse_dataclass_field(parser, field):
            if any(k in field.metadata for k in _OWN_METADATA):
                field = copy.copy(field)
                field.metadata = MappingProxyType({k: v for k, v in field.metadata.items() if k not in _OWN_METADATA})
            HfArgumentParser._parse_dataclass_field(parser, field)

    # no abbreviations: `--conf x` or `--lr 1` must not silently mean another flag
    parser = Parser(config_cls, prog=prog, description=config_cls.__doc__, allow_abbrev=False)
    parser.add_argument("--config", default=None, help="YAML file with any of these options; flags override it.")
    for action in parser._actions:  # argparse %-formats help strings: a literal "95%" must not break --help
        if action.help:
            action.help = action.help.replace("%", "%%")
    return parser


def explicit_bools(parser, argv: list[str]) -> list[str]:
    """`--flag X` -> `--flag=true X` for a boolean flag whose next word is not a boolean.

    A boolean field's flag takes an optional value (`--dry-run`, `--dry-run false`), so argparse would
    take the next word as that value: `rdo run --dry-run pipeline.yaml` must not read the file name as one.
    """
    bools = {opt for a in parser._actions if a.nargs == "?" and a.const is True for opt in a.option_strings}
    out = []
    for i, tok in enumerate(argv):
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if tok in bools and nxt is not None and not nxt.startswith("-") and nxt.lower() not in _BOOL_WORDS:
            tok += "=true"
        out.append(tok)
    return out


def positional_first(parser, argv: list[str], field: str) -> list[str]:
    """The command's one bare argument, wherever it stands, as `--field VALUE` (`rdo run x.yaml --dry-run`)."""
    takes_value = {opt: a.nargs for a in parser._actions for opt in a.option_strings if a.nargs != 0}
    bools = {opt for a in parser._actions if a.nargs == "?" and a.const is True for opt in a.option_strings}
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok.startswith("-"):
            nargs = takes_value.get(tok) if "=" not in tok else 0
            i += 1
            if nargs in ("+", "*"):
                while i < len(argv) and not argv[i].startswith("-"):
                    i += 1
            elif tok in bools:  # its value is optional: only a boolean word is its value
                i += int(i < len(argv) and argv[i].lower() in _BOOL_WORDS)
            elif nargs not in (0, None) or tok in takes_value:
                i += 1
            continue
        return [f"--{field}", tok, *argv[:i], *argv[i + 1:]]
    return argv


def _config_path(argv: list[str]) -> str | None:
    """The --config value, written `--config f.yaml` or `--config=f.yaml` (argparse parses both)."""
    import argparse

    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    return known.config


def read_yaml_options(config_cls, path: str, parser) -> dict:
    """The options in a YAML file, each one a field of `config_cls`; anything else is a one-line error."""
    import yaml

    try:
        with open(path) as f:
            values = yaml.safe_load(f)
    except OSError as e:
        parser.error(f"--config {path}: {e.strerror}")
    except yaml.YAMLError as e:
        parser.error(f"--config {path}: not valid YAML ({' '.join(str(e).split())})")
    values = {} if values is None else values
    if not isinstance(values, dict):
        parser.error(f"--config {path}: expected a mapping of option: value, got {type(values).__name__}")
    known = {f.name for f in fields(config_cls) if f.init}
    unknown = sorted(set(values) - known)
    if unknown:
        parser.error(f"{path}: unknown option(s) {', '.join(map(str, unknown))} (see {parser.prog} --help)")
    for action in parser._actions:  # argparse checks choices of flags only, not of defaults
        if action.choices and action.dest in values and values[action.dest] not in action.choices:
            parser.error(f"{path}: {action.dest}: {values[action.dest]!r} is not one of {', '.join(map(str, action.choices))}")
    return values


def _usage(prefix: str = "") -> None:
    print("usage: rdo <command> [options]   (rdo <command> --help for its options)\n\ncommands:")
    for name, (*_, desc) in COMMANDS.items():
        if name.startswith(prefix):
            print(f"  {name:18s} {desc}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        _usage()
        return 0
    # the longest leading words that name a command: "eval human export", "eval accuracy", "align"
    words = next((k for k in (3, 2, 1) if " ".join(argv[:k]) in COMMANDS), 1)
    command, rest = " ".join(argv[:words]), argv[words:]
    if command not in COMMANDS:
        # a command family such as "eval" or "eval human": list its subcommands
        lead: list[str] = []
        for word in argv[:2]:
            if not any(name.startswith(" ".join(lead + [word]) + " ") for name in COMMANDS):
                break
            lead.append(word)
        prefix = " ".join(lead) + " " if lead else ""
        if not lead:
            print(f"rdo: unknown command {argv[0]!r}", file=sys.stderr)
        _usage(prefix)
        asked = argv[len(lead):len(lead) + 1] in (["-h"], ["--help"])
        return 0 if lead and asked else 2
    config_cls, fn = load(command)
    from rdo.utils.distributed import check_launch

    try:
        check_launch(command)  # under torchrun: a one-process command is refused before it runs N times
    except ValueError as e:
        print(f"rdo {command}: error: {e}", file=sys.stderr)
        return 2
    try:
        cfg = parse_config(config_cls, rest, prog=f"rdo {command}", positional=POSITIONAL.get(command))
        fn(cfg)
    except (ValueError, FileNotFoundError) as e:  # bad settings or bad data: the message names what to fix
        if os.environ.get("RDO_DEBUG"):
            raise
        print(f"rdo {command}: error: {e}\n(set RDO_DEBUG=1 for the full traceback)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
