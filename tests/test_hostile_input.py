"""Hostile input (issue 10): generated malformed datasets, and a fixed corpus of them in tests/data/bad/,
run through every command that reads data. Each bad row is a one-line error naming file, row (the
editor's line number) and field, or under --skip_invalid a counted skip; valid rows all survive with
their own coefficient. Never a traceback. The checks themselves live in hostile_data.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostile_data import (
    ALL,
    LINE_LEVEL,
    PAIR_BAD,
    RANKED_BAD,
    Line,
    bad_row,
    build_env,
    check_every_command,
    duplicate_of,
    invalid_utf8,
    valid_pair,
    valid_ranked,
    write,
)

BAD_DIR = Path(__file__).parent / "data" / "bad"
ODD = ["é", "\u200b\u200dzero-width", "\u202eRTL override", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "a\u0301\u0301", "line\u2028sep", "nul\x00byte",
       "🙂" * 5, "tab\tand\r\nCRLF", "x" * 3000]


@pytest.fixture(scope="module")
def env(tiny_model, tmp_path_factory):
    return build_env(tiny_model, tmp_path_factory.mktemp("hostile"))


texts = st.one_of(st.sampled_from(ODD), st.text(st.characters(exclude_categories=("Cs",)), max_size=12)).map(lambda s: "t" + s)
coefs = st.one_of(st.floats(-5, 5, allow_nan=False), st.sampled_from([0.0, -0.0, 1e-300, 1e6]))


@st.composite
def datasets(draw):
    kind = draw(st.sampled_from(["pair", "ranked"]))
    bad_names = sorted(PAIR_BAD if kind == "pair" else RANKED_BAD) + sorted(LINE_LEVEL) + ["invalid_utf8", "duplicate", "blank"]
    plan = draw(st.lists(st.sampled_from(bad_names), min_size=1, max_size=4))
    for _ in range(2):  # at least two valid rows, anywhere
        plan.insert(draw(st.integers(0, len(plan))), "valid")
    lines: list[Line] = []
    for name in plan:
        n = len(lines) + 1
        if kind == "pair":
            valid = valid_pair(n, draw(texts), draw(texts), draw(texts), draw(coefs))
        else:
            k = draw(st.integers(2, 4))  # ragged: K differs from row to row
            scores = draw(st.lists(st.floats(-3, 3, allow_nan=False), min_size=k, max_size=k, unique=True))
            valid = valid_ranked(n, draw(texts), [draw(texts) for _ in range(k)], scores)
        earlier = [ln for ln in lines if ln.id is not None and not ln.bad_for]
        if name == "valid" or (name == "duplicate" and not earlier):
            lines.append(valid)
        elif name == "blank":
            lines.append(Line(draw(st.sampled_from([b"", b"   ", b"\t"]))))
        elif name in LINE_LEVEL:
            lines.append(Line(LINE_LEVEL[name], field="<line>", bad_for=ALL))
        elif name == "invalid_utf8":
            lines.append(invalid_utf8(valid))
        elif name == "duplicate":
            lines.append(duplicate_of(draw(st.sampled_from(earlier))))
        else:
            lines.append(bad_row(valid, name, kind))
    return kind, lines, draw(st.booleans()), draw(st.sampled_from([b"\n", b"\r\n"]))


@settings(max_examples=12, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=datasets())
def test_generated_hostile_datasets(env, data, capsys):
    kind, lines, bom, newline = data
    path = write(Path(env.work) / f"gen-{abs(hash(repr(data))) % 10**8}.jsonl", lines, bom=bom, newline=newline)
    check_every_command(env, path, lines, kind, capsys)


# --- the corpus: tests/data/bad/<name>.jsonl with its expectations in expected.json ------------

def corpus() -> list[str]:
    return sorted(json.loads((BAD_DIR / "expected.json").read_text()))


def corpus_lines(name: str) -> tuple[str, list[Line]]:
    spec = json.loads((BAD_DIR / "expected.json").read_text())[name]
    raw = (BAD_DIR / name).read_bytes().removeprefix(b"\xef\xbb\xbf").split(b"\n")
    if raw and raw[-1] == b"":
        raw = raw[:-1]
    assert len(raw) == len(spec["lines"]), f"{name}: {len(raw)} lines but {len(spec['lines'])} expectations"
    lines = [Line(text.rstrip(b"\r"), id=e.get("id"), coef=e.get("coef"), pairs=e.get("pairs", 0), field=e.get("field"),
                  bad_for=frozenset(e.get("bad_for", [])), duplicate=e.get("duplicate", False)) for text, e in zip(raw, spec["lines"])]
    return spec["kind"], lines


@pytest.mark.parametrize("name", corpus())
def test_bad_corpus(env, name, capsys):
    kind, lines = corpus_lines(name)
    check_every_command(env, BAD_DIR / name, lines, kind, capsys)


def test_corpus_covers_each_kind_of_bad_line():
    fields = {e.get("field") for name in corpus() for e in json.loads((BAD_DIR / "expected.json").read_text())[name]["lines"]}
    assert {"<line>", "id", "chosen", "rejected", "prompt", "rdo_reward_diff", "scores", "responses[1]"} <= fields
    assert math.isnan(json.loads(b"NaN"))  # the corpus writes NaN as Python does: a bare token
