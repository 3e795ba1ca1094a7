"""The command-line surface: `--help` and `--config` on every command `rdo` lists (cli.COMMANDS)."""

from __future__ import annotations

from dataclasses import MISSING, fields

import pytest

from rdo import cli
from rdo.cli import COMMANDS, main, parse_config
from rdo.commands import load

# The smallest valid settings of each command (paths need not exist: configs only check settings).
# A command not listed here still gets the tests that need no valid config (help, unknown keys, `=`).
MINIMAL = {
    "align": {"model_name_or_path": "m", "dataset_name": "d.jsonl", "output_dir": "OUT"},
    "train-rm": {"model_name_or_path": "m", "dataset_name": "d.jsonl", "output_dir": "OUT"},
    "train-diff": {"model_name_or_path": "m", "dataset_name": "d.jsonl", "output_dir": "OUT"},
    "score": {"scorer": "s", "dataset_name": "d.jsonl", "output": "o.jsonl"},
    "eval accuracy": {"scorer": "s", "dataset_name": "d.jsonl"},
}


def config_class(command: str):
    return load(command)[0]


def write_yaml(path, values: dict):
    import yaml

    path.write_text(yaml.safe_dump(values))
    return path


def option_fields(cls):
    return [f for f in fields(cls) if f.init and not f.name.startswith("_")]


def resolved(values: dict, tmp_path) -> dict:
    return {k: (str(tmp_path) if v == "OUT" else v) for k, v in values.items()}


# --- --help ------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", list(COMMANDS))
def test_help_works_and_lists_every_option(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*command.split(), "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: rdo {command}")
    assert "--config" in text
    for f in option_fields(config_class(command)):
        assert f"--{f.name}" in text, f"rdo {command} --help does not list --{f.name}"


def test_help_keeps_literal_percent_signs(capsys):
    """argparse %-formats help strings: "95%" once crashed `rdo eval accuracy --help` with a TypeError."""
    with pytest.raises(SystemExit):
        main(["eval", "accuracy", "--help"])
    assert "95% interval" in capsys.readouterr().out


def test_bare_rdo_and_command_families_list_their_commands(capsys):
    assert main([]) == 0
    text = capsys.readouterr().out
    for name, (*_, desc) in COMMANDS.items():
        assert f"  {name}" in text and desc in text
    for family in sorted({name.split()[0] for name in COMMANDS if " " in name}):
        assert main([family, "--help"]) == 0
        listed = capsys.readouterr().out
        members = [name for name in COMMANDS if name.startswith(family + " ")]
        assert members and all(m in listed for m in members)
    assert main(["eval", "--help"]) == 0
    assert "eval accuracy" in capsys.readouterr().out


# --- --config ----------------------------------------------------------------------------------

@pytest.mark.parametrize("command", list(MINIMAL))
@pytest.mark.parametrize("form", ["space", "equals"])
def test_config_file_gives_every_setting_and_flags_override_it(command, form, tmp_path):
    cls = config_class(command)
    values = resolved(MINIMAL[command], tmp_path)
    flagged = {"skip_invalid": True, "dataset_split": "other"}  # one bool and one string option each command has
    data = write_yaml(tmp_path / "c.yaml", {**values, **flagged, "torch_dtype": "float32"})
    cfg_arg = ["--config", str(data)] if form == "space" else [f"--config={data}"]
    from_file = parse_config(cls, [*cfg_arg, "--dataset_split", "cli"], prog=f"rdo {command}")
    assert (from_file.skip_invalid, from_file.torch_dtype) == (True, "float32")  # read from the file
    assert from_file.dataset_split == "cli"  # the flag wins over the file

    argv = [x for k, v in {**values, "torch_dtype": "float32", "dataset_split": "cli"}.items() for x in (f"--{k}", str(v))]
    from_flags = parse_config(cls, [*argv, "--skip_invalid", "true"], prog=f"rdo {command}")
    as_dict = (lambda c: c.to_dict()) if hasattr(from_file, "to_dict") else vars
    assert as_dict(from_file) == as_dict(from_flags)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_unknown_yaml_key_names_the_file_and_key_in_either_form(command, tmp_path, capsys):
    """Also proves `--config=file` reads the file (it once silently ignored it) for every command."""
    data = write_yaml(tmp_path / "bad.yaml", {"no_such_option": 1})
    for cfg_arg in (["--config", str(data)], [f"--config={data}"]):
        with pytest.raises(SystemExit) as exit_:
            main([*command.split(), *cfg_arg])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert f"{data}: unknown option(s) no_such_option" in err and "Traceback" not in err


@pytest.mark.parametrize("command", list(MINIMAL))
def test_unrecognised_arguments_and_abbreviations_are_errors(command, tmp_path, capsys):
    data = write_yaml(tmp_path / "c.yaml", resolved(MINIMAL[command], tmp_path))
    with pytest.raises(SystemExit) as exit_:
        main([*command.split(), "--config", str(data), "--bogus", "1"])
    assert exit_.value.code == 2
    assert "unrecognised arguments: --bogus 1" in capsys.readouterr().err
    # an abbreviated --config would have been taken by the parser but never read: refuse it
    with pytest.raises(SystemExit):
        main([*command.split(), "--conf", str(data)])
    assert "--conf" in capsys.readouterr().err


def test_config_file_errors_are_one_line(tmp_path, capsys):
    for text, expected in (("- a\n- b\n", "expected a mapping of option: value, got list"),
                           ("a: [1\n", "not valid YAML")):
        (tmp_path / "c.yaml").write_text(text)
        with pytest.raises(SystemExit):
            main(["score", "--config", str(tmp_path / "c.yaml")])
        assert expected in capsys.readouterr().err
    (tmp_path / "c.yaml").write_text("torch_dtype: float64\n")  # flags check their choices; the file's values too
    with pytest.raises(SystemExit):
        main(["score", "--config", str(tmp_path / "c.yaml")])
    assert "c.yaml: torch_dtype: 'float64' is not one of auto, float32, bfloat16, float16" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["score", f"--config={tmp_path / 'missing.yaml'}"])
    assert "missing.yaml: No such file or directory" in capsys.readouterr().err


def test_every_option_has_a_default_and_a_help_line():
    """One config dataclass per command, each option documented (its --help line) and optional in YAML."""
    for command in COMMANDS:
        for f in option_fields(config_class(command)):
            assert f.default is not MISSING or f.default_factory is not MISSING, (command, f.name)
            assert f.metadata.get("help"), (command, f.name)


@pytest.mark.parametrize("command", ["run"])  # the commands with a positional argument and boolean flags
def test_boolean_flag_before_the_positional_does_not_swallow_it(command, tmp_path):
    """`rdo run --dry-run pipeline.yaml`: every boolean flag of a command with a positional argument
    leaves the next word to the positional (README's first check failed with 'Truthy value expected')."""
    from rdo.cli import POSITIONAL, build_parser, explicit_bools, positional_first
    from rdo.commands import load as _load

    cls, _ = _load(command)
    parser = build_parser(cls, f"rdo {command}")
    field = POSITIONAL[command]
    bools = [a.option_strings[0] for a in parser._actions if a.nargs == "?" and a.const is True]
    assert bools, f"rdo {command} has no boolean flag to check"
    for flag in bools:
        argv = positional_first(parser, explicit_bools(parser, [flag, "x.yaml"]), field)
        ns, rest = parser.parse_known_args(argv)
        assert getattr(ns, field) == "x.yaml" and getattr(ns, flag.lstrip("-").replace("-", "_")) is True and not rest, flag
        argv = positional_first(parser, explicit_bools(parser, [flag, "false", "x.yaml"]), field)
        ns, _ = parser.parse_known_args(argv)
        assert getattr(ns, field) == "x.yaml" and getattr(ns, flag.lstrip("-").replace("-", "_")) is False, flag
