"""Every command line the README and docs show runs as written: each `rdo ...` line is parsed into its
command's config (flags, types, choices and the command's own checks), `rdo run --dry-run` lines run,
launcher lines are checked from `-m rdo.cli` on, and `make` targets exist. Lines with `...` are explicit
placeholders and are skipped; nothing here needs a hub."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "configs").rglob("README.md"))]
FENCE = re.compile(r"^```[a-z]*\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`((?:rdo|make|torchrun|accelerate launch|python -m) [^`]*)`")


def _logical_lines(block: str) -> list[str]:
    out, cur = [], ""
    for line in block.splitlines():
        cur += line.rstrip()
        if cur.endswith("\\"):
            cur = cur[:-1] + " "
            continue
        out.append(cur.strip())
        cur = ""
    return [line for line in out if line]


def doc_commands(inline: bool = False) -> list[tuple[str, str]]:
    """(id, command line) of every fenced command line (or, with `inline`, every inline `rdo ... --flag` span)."""
    found = []
    for doc in DOCS:
        text = doc.read_text()
        if inline:
            lines = [m.group(1) for m in INLINE.finditer(text) if " --" in m.group(1)]  # a span naming options
        else:
            lines = [line for block in FENCE.findall(text) for line in _logical_lines(block)]
        for line in lines:
            if line.split()[0] not in ("rdo", "make", "torchrun", "accelerate", "python"):
                continue  # YAML, Python and prose in the same blocks
            words = shlex.split(line, comments=True)
            if words and "..." not in words:
                found.append((f"{doc.relative_to(ROOT)}: {' '.join(words)[:90]}", " ".join(shlex.quote(w) for w in words)))
    if not inline:
        for cfg in sorted((ROOT / "configs" / "paper").glob("*.yaml")):  # each paper config's header names its check
            for m in re.finditer(r"^#\s*(rdo run --dry-run \S+)", cfg.read_text(), re.M):
                found.append((f"{cfg.relative_to(ROOT)}: {m.group(1)}", m.group(1)))
    return sorted(set(found))


def _command(argv: list[str]) -> tuple[str, list[str]]:
    from rdo.cli import COMMANDS

    n = next((k for k in (3, 2, 1) if " ".join(argv[:k]) in COMMANDS), None)
    assert n is not None, f"rdo {' '.join(argv[:2])}: no such command"
    return " ".join(argv[:n]), argv[n:]


def _check_other(words: list[str]) -> list[str] | None:
    """make targets and python modules exist, launchers' files exist; returns the rdo argv a launcher runs."""
    if words[0] == "make":
        targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
        assert words[1] in targets, f"make {words[1]}: no such target in the Makefile"
        return None
    for w in words:
        if w.startswith("configs/"):
            assert (ROOT / w).is_file(), f"{w}: no such file"
    if "-m" in words:
        import importlib.util

        module = words[words.index("-m") + 1]
        assert importlib.util.find_spec(module) is not None, f"python -m {module}: no such module"
        if module == "rdo.cli":
            return words[words.index("-m") + 2:]
    return None


def test_docs_show_commands():
    names = " ".join(n for n, _ in doc_commands())
    assert len(doc_commands()) >= 20 and "rdo run --dry-run" in names and "rdo align" in names


@pytest.mark.parametrize("line", [c for _, c in doc_commands()], ids=[n for n, _ in doc_commands()])
def test_doc_command_runs_as_written(line, monkeypatch, tmp_path):
    """A fenced command line: parsed into its config with the command's checks; `rdo run --dry-run` runs."""
    from rdo.cli import POSITIONAL, main, parse_config
    from rdo.commands import load as _load

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("RDO_CACHE", str(tmp_path / "cache"))
    words = shlex.split(line)
    argv = words[1:] if words[0] == "rdo" else _check_other(words)
    if argv is None:
        return
    if argv[:1] == ["run"] and "--dry-run" in argv:
        assert main(argv) == 0
        return
    command, flags = _command(argv)
    cls, _ = _load(command)
    try:
        parse_config(cls, flags, prog=f"rdo {command}", positional=POSITIONAL.get(command))
    except SystemExit as e:  # argparse's own error: an unknown flag, a bad value or choice
        pytest.fail(f"`{line}` does not parse (exit {e.code})")


@pytest.mark.parametrize("line", [c for _, c in doc_commands(inline=True)], ids=[n for n, _ in doc_commands(inline=True)])
def test_inline_command_names_real_options(line):
    """An inline `rdo <command> --flag ...` in prose: the command and every flag it names exist."""
    from rdo.cli import build_parser
    from rdo.commands import load as _load

    words = shlex.split(line)
    argv = words[1:] if words[0] == "rdo" else _check_other(words)
    if argv is None:
        return
    command, flags = _command(argv)
    parser = build_parser(_load(command)[0], f"rdo {command}")
    known = {opt for a in parser._actions for opt in a.option_strings}
    unknown = [f.split("=")[0] for f in flags if f.startswith("--") and f.split("=")[0] not in known]
    assert not unknown, f"`{line}`: rdo {command} has no option {unknown}"
