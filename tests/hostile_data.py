"""Shared by the hostile-input tests: datasets with known bad lines, and every command that reads data run on them.

A dataset is a list of `Line`s; each says what the line is (a valid row, a blank line, or a bad row),
which field a bad row's error must name and which commands must refuse it. `check_every_command`
runs the data path of align, train-rm and train-diff (their loading + encoding functions) and
`rdo score` / `rdo eval accuracy` through `rdo.cli.main`, with and without `--skip_invalid`, and
checks each: a one-line error naming file, row (the editor's line number) and field, or a counted
skip that keeps exactly the valid rows, each with its own coefficient — never a traceback.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path

ALL = frozenset({"align", "train-rm", "train-diff", "score", "eval accuracy"})
COMMANDS = sorted(ALL)


@dataclass
class Line:
    """One physical line of a JSONL file and what every command must make of it."""

    text: bytes
    id: str | None = None  # valid rows: their id
    coef: float | None = None  # valid pair rows: their coefficient
    pairs: int = 0  # comparisons the row holds (eval accuracy counts them)
    field: str | None = None  # bad rows: the field the error names
    bad_for: frozenset = dc_field(default_factory=frozenset)  # commands that must refuse this row
    duplicate: bool = False  # a duplicated id: an error even with --skip_invalid


def write(path: Path, lines: list[Line], bom: bool = False, newline: bytes = b"\n") -> Path:
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + b"".join(ln.text + newline for ln in lines))
    return path


@dataclass
class Env:
    tiny_model: Path
    reward: Path
    difference: Path
    work: Path


def build_env(tiny_model: Path, work: Path) -> Env:
    """Two untrained scorer folders on the tiny model (what they score does not matter here)."""
    from rdo.models import load_tokenizer
    from rdo.score.scorers import ScorerSpec, build_scorer_model, resolve_template, use_scorer_pad

    out = {}
    for kind, lengths in (("reward", (64, 32)), ("difference", (128, 32))):
        folder = work / kind
        tok = load_tokenizer(str(tiny_model))
        use_scorer_pad(tok)
        build_scorer_model(str(tiny_model), tok, "float32").save_pretrained(folder)
        tok.save_pretrained(folder)
        template = resolve_template("paper", tok) if kind == "difference" else None
        ScorerSpec(kind, *lengths, template, str(tiny_model)).save(folder)
        out[kind] = folder
    return Env(tiny_model, out["reward"], out["difference"], work)


def run_command(env: Env, command: str, path: Path, kind: str, skip: bool, capsys) -> tuple[str, object]:
    """("ok", kept rows as {rdo_row: weight or None} or eval metrics) or ("error", the message)."""
    from rdo.cli import main

    if command in ("score", "eval accuracy"):
        out = Path(tempfile.mkdtemp(dir=env.work)) / ("scored.jsonl" if command == "score" else "acc.json")
        scorer = env.reward if command == "score" else env.difference
        argv = [*command.split(), "--scorer", str(scorer), "--dataset_name", str(path), "--output", str(out),
                "--device", "cpu", "--skip_invalid", str(skip).lower()]
        if command == "eval accuracy":
            argv += ["--bootstrap", "0"]
        capsys.readouterr()
        rc = main(argv)
        err = capsys.readouterr().err
        assert "Traceback" not in err, err
        if rc != 0:
            prefix = f"rdo {command}: error: "  # after whatever progress bars printed before it
            assert rc == 2 and prefix in err, err
            return "error", err[err.rindex(prefix) + len(prefix):].split("\n(set RDO_DEBUG")[0]
        if command == "eval accuracy":
            return "ok", json.loads(out.read_text())
        summary = json.loads(out.with_name("scored.summary.json").read_text())
        scored = [json.loads(line) for line in out.read_text(encoding="utf-8").split("\n") if line]  # not splitlines(): U+2028 ends no JSONL line
        return "ok", (scored, summary)
    try:
        return "ok", _data_path(env, command, path, kind, skip)
    except (ValueError, FileNotFoundError) as e:  # exactly what rdo.cli.main turns into a one-line error
        return "error", str(e)


def _data_path(env: Env, command: str, path: Path, kind: str, skip: bool):
    """The loading + encoding step of a training command, as it runs inside the command."""
    from rdo.models import load_tokenizer

    out_dir = tempfile.mkdtemp(dir=env.work)
    common = dict(model_name_or_path=str(env.tiny_model), dataset_name=str(path), output_dir=out_dir,
                  skip_invalid=skip, use_cpu=True, report_to="none", max_length=64, max_prompt_length=32)
    tok = load_tokenizer(str(env.tiny_model))
    if command == "align":
        from rdo.train.align import prepare_features
        from rdo.config import AlignConfig
        from rdo.core.methods import get_method

        method = "dpo" if kind == "pair" else "rrhf"
        cfg = AlignConfig(**common, method=method, alpha=1.0, coef_normalize="none", coef_nonpositive="clip", coef_floor=0.01)
        features, report = prepare_features(cfg, get_method(method), tok)
        return {"rows": [(f["rdo_row"], f["rdo_weight"]) for f in features], "skipped": report["skipped"]["total"]}
    from rdo.config import TrainDiffConfig, TrainRMConfig
    from rdo.score.scorers import DifferenceEncoder, resolve_template, use_scorer_pad
    from rdo.score.training import _features

    use_scorer_pad(tok)
    if command == "train-rm":
        cfg = TrainRMConfig(**common)
        features, report = _features(cfg, "reward", tok, str(path), "train", None)
    else:
        cfg = TrainDiffConfig(**{**common, "max_length": 128})
        enc = DifferenceEncoder(tok, resolve_template(cfg.template, tok), cfg.truncation)
        features, report = _features(cfg, "difference", tok, str(path), "train", enc)
    return {"rows": [(f["rdo_row"], None) for f in features], "skipped": report["skipped"]["total"]}


def check_every_command(env: Env, path: Path, lines: list[Line], kind: str, capsys, commands=COMMANDS) -> None:
    for command in commands:
        for skip in (False, True):
            check(env, command, path, lines, kind, skip, capsys)


def check(env: Env, command: str, path: Path, lines: list[Line], kind: str, skip: bool, capsys) -> None:
    rows = {n: ln for n, ln in enumerate(lines, start=1)}
    bad = [n for n, ln in rows.items() if command in ln.bad_for]
    valid = [n for n, ln in rows.items() if ln.id is not None and command not in ln.bad_for]
    first_error = next((n for n in bad if not skip or rows[n].duplicate), None)
    status, got = run_command(env, command, path, kind, skip, capsys)
    where = f"{command} skip={skip} on {path.name}"
    if first_error is not None:
        assert status == "error", f"{where}: expected an error at row {first_error}, got {status}"
        msg = str(got)
        assert "\n" not in msg and "Traceback" not in msg, f"{where}: not one line: {msg!r}"
        expected = f"{path}, row {first_error}, field '{rows[first_error].field}'"
        assert msg.startswith(expected), f"{where}: expected {expected!r}, got {msg!r}"
        return
    assert status == "ok", f"{where}: unexpected error {got!r}"
    n_skipped = len(bad)
    if command in ("align", "train-rm", "train-diff"):
        kept = got["rows"]
        assert sorted({r for r, _ in kept}) == valid, f"{where}: rows {sorted({r for r, _ in kept})} != {valid}"
        assert got["skipped"] == n_skipped, f"{where}: skipped {got['skipped']} != {n_skipped}"
        if command == "align" and kind == "pair":
            for r, w in kept:  # each row keeps its own coefficient: weight = max(R, floor), alpha 1, no rescaling
                assert math.isclose(w, max(rows[r].coef, 0.01), rel_tol=1e-6), f"{where}: row {r} weight {w} != R {rows[r].coef}"
    elif command == "score":
        out_rows, summary = got
        assert [o["id"] for o in out_rows] == [rows[n].id for n in valid], f"{where}: output ids"
        for o in out_rows:  # a scored row is its own input row, plus the new columns
            assert math.isfinite(o["rdo_reward_diff"] if kind == "pair" else o["rdo_reward_diff"][0][1])
        assert summary["skipped"]["at_load"]["total"] == n_skipped and not summary["skipped"]["too_long"]
    else:
        assert got["n_pairs"] == sum(rows[n].pairs for n in valid), f"{where}: n_pairs"
        assert got["skipped"]["at_load"]["total"] == n_skipped and not got["skipped"]["too_long"]


# --- building lines ----------------------------------------------------------------------------

COEF = "rdo_reward_diff"
LINE_LEVEL = {  # lines that are no JSON object at all
    "broken_json": b'{"id": "broken", "prompt": "p", "chosen": "c"',
    "not_object": b"[1, 2, 3]",
    "bare_string": b'"just a string"',
}


def dump(row: dict) -> bytes:
    return json.dumps(row, ensure_ascii=False).encode()  # NaN / Infinity written as bare tokens, as Python writes them


def valid_pair(n: int, prompt: str, chosen: str, rejected: str, coef: float) -> Line:
    row = {"id": f"r{n}", "prompt": prompt, "chosen": chosen + " A", "rejected": rejected + " B", COEF: coef}
    return Line(dump(row), id=row["id"], coef=coef, pairs=1)


def valid_ranked(n: int, prompt: str, responses: list[str], scores: list[float]) -> Line:
    row = {"id": f"r{n}", "prompt": prompt, "responses": [f"{r} {i}" for i, r in enumerate(responses)], "scores": scores}
    k = len(responses)
    return Line(dump(row), id=row["id"], pairs=k * (k - 1) // 2)


PAIR_BAD = {  # name -> (change to a valid row, field named, commands that refuse it)
    "missing_chosen": (lambda r: {k: v for k, v in r.items() if k != "chosen"}, "chosen", ALL),
    "chosen_not_a_string": (lambda r: {**r, "chosen": 5}, "chosen", ALL),
    "rejected_a_list": (lambda r: {**r, "rejected": [1, "x"]}, "rejected", ALL),
    "blank_prompt": (lambda r: {**r, "prompt": " \t\u2028"}, "prompt", ALL),
    "identical_responses": (lambda r: {**r, "rejected": r["chosen"]}, "rejected", ALL),
    "nan_coefficient": (lambda r: {**r, COEF: float("nan")}, COEF, {"align"}),
    "infinite_coefficient": (lambda r: {**r, COEF: float("-inf")}, COEF, {"align"}),
    "string_coefficient": (lambda r: {**r, COEF: "1.5"}, COEF, {"align"}),
    "null_coefficient": (lambda r: {**r, COEF: None}, COEF, {"align"}),
    "bool_coefficient": (lambda r: {**r, COEF: True}, COEF, {"align"}),
}
RANKED_BAD = {
    "scores_too_short": (lambda r: {**r, "scores": r["scores"][:-1]}, "scores", ALL),
    "responses_not_a_list": (lambda r: {**r, "responses": "abc"}, "responses", ALL),
    "response_not_a_string": (lambda r: {**r, "responses": [r["responses"][0], 3, *r["responses"][2:]]}, "responses[1]", ALL),
    "one_response": (lambda r: {**r, "responses": r["responses"][:1], "scores": r["scores"][:1]}, "responses", ALL),
    "equal_scores": (lambda r: {**r, "scores": [1.0] * len(r["scores"])}, "scores", ALL),
    "nan_score": (lambda r: {**r, "scores": [float("nan"), *r["scores"][1:]]}, "scores[0]", ALL),
    "missing_prompt": (lambda r: {k: v for k, v in r.items() if k != "prompt"}, "prompt", ALL),
}


def bad_row(valid: Line, name: str, kind: str) -> Line:
    change, fld, refused_by = (PAIR_BAD if kind == "pair" else RANKED_BAD)[name]
    row = change(json.loads(valid.text))
    survivor = refused_by != ALL  # rows refused only by align are still rows for the others
    return Line(dump(row), id=row.get("id") if survivor else None, coef=valid.coef, pairs=valid.pairs,
                field=fld, bad_for=frozenset(refused_by))


def invalid_utf8(valid: Line) -> Line:
    text = valid.text.replace(b'"prompt": "', b'"prompt": "\xff', 1)
    return Line(text, field="<line>", bad_for=ALL)


def duplicate_of(earlier: Line) -> Line:
    row = json.loads(earlier.text)
    key = "chosen" if "chosen" in row else "prompt"
    row[key] = row[key] + " (edited copy)"
    return Line(dump(row), field="id", bad_for=ALL, duplicate=True)
