"""Malformed input: every bad row is reported as `<file>, row <n>, field '<f>': <problem>`, or, under
`skip_invalid=True`, dropped and counted by reason in `loaded.skips` while the good rows survive.

Each case puts the bad row at row 2 of 3, so the format is detected from a good first row and the
good rows 1 and 3 must come through.
"""

from __future__ import annotations

import math

import pytest
from conftest import write_jsonl

from rdo.data import DataError, load_records
from rdo.data.tokenize import Encoder, Truncation, encode_records

COEF = "rdo_reward_diff"
PAIR = {"prompt": "Q: 2+2?", "chosen": " 4", "rejected": " 5", COEF: 1.0}
RANKED = {"prompt": "Pick one", "responses": ["a", "b", "c"], "scores": [1.0, 3.0, 2.0]}
UNPAIRED = {"prompt": "2+2=", "completion": "4", "label": True}
HH = {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!", "rejected": "\n\nHuman: Hi\n\nAssistant: What?"}


def expect_row2_invalid(path, field: str, reason: str, **kwargs):
    """Row 2 raises a DataError naming file, row and field; with skip_invalid it is dropped and counted."""
    with pytest.raises(DataError) as info:
        load_records(str(path), **kwargs)
    assert str(info.value).startswith(f"{path}, row 2, field '{field}': {reason}")
    assert "--skip_invalid" in str(info.value)  # the message says how to get past it
    assert (info.value.source, info.value.row, info.value.field) == (str(path), 2, field)

    loaded = load_records(str(path), skip_invalid=True, **kwargs)
    assert [r["rdo_row"] for r in loaded.records] == [1, 3]
    assert dict(loaded.skips.counts) == {f"{field}: {reason}": 1}
    assert loaded.skips.as_dict() == {"total": 1, "by_reason": {f"{field}: {reason}": 1}}
    return loaded


@pytest.mark.parametrize(
    "bad, field, reason, kwargs",
    [
        pytest.param({"prompt": "Q", "rejected": " 5"}, "chosen", "missing", {}, id="missing-field"),
        pytest.param({"prompt": "Q", "chosen": "   ", "rejected": " 5"}, "chosen", "empty", {}, id="empty-field"),
        pytest.param({"prompt": "Q", "chosen": 4, "rejected": " 5"}, "chosen", "expected a string, got int", {}, id="chosen-not-string"),
        pytest.param({"prompt": ["Q"], "chosen": " 4", "rejected": " 5"}, "prompt", "expected a string, got list", {}, id="prompt-not-string"),
        pytest.param(
            {"prompt": "Q", "chosen": " 4", "rejected": " 4"},
            "rejected", "identical to 'chosen'; a pair needs two different responses", {},
            id="chosen-equals-rejected",
        ),
        pytest.param({**PAIR, COEF: math.nan}, COEF, "coefficient is nan", {"coef_column": COEF}, id="nan-coefficient"),
        pytest.param({**PAIR, COEF: math.inf}, COEF, "coefficient is inf", {"coef_column": COEF}, id="inf-coefficient"),
        pytest.param({**PAIR, COEF: -math.inf}, COEF, "coefficient is -inf", {"coef_column": COEF}, id="neg-inf-coefficient"),
        pytest.param({k: v for k, v in PAIR.items() if k != COEF}, COEF, "missing coefficient", {"coef_column": COEF}, id="missing-coefficient"),
        pytest.param({**PAIR, COEF: None}, COEF, "missing coefficient", {"coef_column": COEF}, id="null-coefficient"),
        pytest.param({**PAIR, COEF: "high"}, COEF, "expected a number", {"coef_column": COEF}, id="text-coefficient"),
        pytest.param({**PAIR, COEF: True}, COEF, "expected a number", {"coef_column": COEF}, id="bool-coefficient"),
    ],
)
def test_bad_pair_row(tmp_path, bad, field, reason, kwargs):
    # json.dumps writes NaN / Infinity as the bare tokens NaN / Infinity, which Python's json reads back.
    path = write_jsonl(tmp_path / "pairs.jsonl", [PAIR, bad, PAIR])
    expect_row2_invalid(path, field, reason, **kwargs)


def test_nan_coefficient_written_as_bare_token(tmp_path):
    path = tmp_path / "nan.jsonl"
    path.write_text(
        '{"prompt": "a", "chosen": "b", "rejected": "c", "rdo_reward_diff": 0.5}\n'
        '{"prompt": "a", "chosen": "b", "rejected": "c", "rdo_reward_diff": NaN}\n'
        '{"prompt": "a", "chosen": "b", "rejected": "c", "rdo_reward_diff": 2}\n'
    )
    expect_row2_invalid(path, COEF, "coefficient is nan", coef_column=COEF)


def test_invalid_json_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text(
        '{"prompt": "a", "chosen": "b", "rejected": "c"}\n'
        '{"prompt": "a", "chosen": "b", "rejected": \n'
        '{"prompt": "x", "chosen": "y", "rejected": "z"}\n'
    )
    with pytest.raises(DataError, match=r"broken\.jsonl, row 2, field '<line>': not valid JSON \(Expecting value at column \d+\)"):
        load_records(str(path))
    loaded = load_records(str(path), skip_invalid=True)
    assert [r["rdo_row"] for r in loaded.records] == [1, 3]
    assert dict(loaded.skips.counts) == {"<line>: not valid JSON": 1}


def test_jsonl_line_that_is_not_an_object(tmp_path):
    path = tmp_path / "list_line.jsonl"
    path.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n["a", "b"]\n{"prompt": "x", "chosen": "y", "rejected": "z"}\n')
    expect_row2_invalid(path, "<line>", "expected a JSON object, got list")


def test_json_array_element_that_is_not_an_object(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text('[{"prompt": "a", "chosen": "b", "rejected": "c"}, "oops", {"prompt": "x", "chosen": "y", "rejected": "z"}]')
    expect_row2_invalid(path, "<row>", "expected a JSON object, got str")


def test_every_row_invalid_is_an_error_even_when_skipping(tmp_path):
    path = tmp_path / "all_bad.jsonl"
    path.write_text("not json\nnot json either\n")
    with pytest.raises(ValueError, match=r"all_bad\.jsonl: every row was invalid\.\nskipped 2 invalid row\(s\)"):
        load_records(str(path), skip_invalid=True)


def test_prompt_longer_than_max_length(tmp_path, byte_tok):
    # With the byte tokenizer a prompt of n characters is n+1 tokens (BOS); max_length=8 leaves
    # room for a response only when the prompt is at most 6 tokens.
    rows = [{"prompt": "abcde", "chosen": "x", "rejected": "y"},       # 6 tokens: fits
            {"prompt": "abcdefghij", "chosen": "x", "rejected": "y"},  # 11 tokens: too long
            {"prompt": "ab", "chosen": "x", "rejected": "y"}]
    path = write_jsonl(tmp_path / "long.jsonl", rows)
    encoder = Encoder(byte_tok, Truncation(max_length=8, max_prompt_length=None))

    loaded = load_records(str(path))
    with pytest.raises(DataError) as info:
        encode_records(loaded.records, encoder, loaded.kind, str(path), skip_invalid=False, skips=loaded.skips)
    assert str(info.value).startswith(
        f"{path}, row 2, field 'prompt': 11 tokens leave no room for a response within max_length=8. "
        "Raise --max_length, set --max_prompt_length"
    )
    assert "--skip_invalid" in str(info.value)

    loaded = load_records(str(path))
    features = encode_records(loaded.records, encoder, loaded.kind, str(path), skip_invalid=True, skips=loaded.skips)
    assert [f["rdo_row"] for f in features] == [1, 3]
    assert dict(loaded.skips.counts) == {"prompt: too long for max_length": 1}


def test_prompts_too_long_by_different_amounts_share_one_reason(tmp_path, byte_tok):
    rows = [{"prompt": "a" * n, "chosen": "x", "rejected": "y"} for n in (2, 10, 11, 12)]
    path = write_jsonl(tmp_path / "long.jsonl", rows)
    loaded = load_records(str(path))
    encoder = Encoder(byte_tok, Truncation(max_length=8, max_prompt_length=None))
    features = encode_records(loaded.records, encoder, loaded.kind, str(path), skip_invalid=True, skips=loaded.skips)
    assert [f["rdo_row"] for f in features] == [1]
    assert dict(loaded.skips.counts) == {"prompt: too long for max_length": 3}


def test_hh_rejected_does_not_share_the_prefix(tmp_path):
    bad = {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!", "rejected": "\n\nHuman: Hey\n\nAssistant: What?"}
    path = write_jsonl(tmp_path / "hh.jsonl", [HH, bad, HH])
    expect_row2_invalid(path, "rejected", "does not share the dialogue prefix of 'chosen'")


def test_hh_transcript_without_an_assistant_turn(tmp_path):
    bad = {"chosen": "\n\nHuman: Hi", "rejected": "\n\nHuman: Hey"}
    path = write_jsonl(tmp_path / "hh.jsonl", [HH, bad, HH])
    expect_row2_invalid(path, "chosen", "no '\\n\\nAssistant:' turn found in the transcript")


def test_hh_empty_final_response(tmp_path):
    bad = {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!", "rejected": "\n\nHuman: Hi\n\nAssistant:  "}
    path = write_jsonl(tmp_path / "hh.jsonl", [HH, bad, HH])
    expect_row2_invalid(path, "rejected", "empty response after the last Assistant turn")


@pytest.mark.parametrize(
    "bad, field, reason",
    [
        pytest.param({**RANKED, "scores": [1.0, 2.0]}, "scores", "not one score per response", id="scores-length"),
        pytest.param({**RANKED, "scores": [1.0, math.nan, 2.0]}, "scores[1]", "expected a finite number", id="nan-score"),
        pytest.param({**RANKED, "scores": [1.0, 2.0, math.inf]}, "scores[2]", "expected a finite number", id="inf-score"),
        pytest.param({**RANKED, "scores": [2, 2.0, 2]}, "scores", "all responses score the same; nothing to rank", id="all-equal"),
        pytest.param({**RANKED, "responses": ["a"], "scores": [1.0]}, "responses", "expected a list of at least 2 responses", id="one-response"),
        pytest.param({**RANKED, "responses": ["a", " ", "c"]}, "responses[1]", "expected a non-empty string", id="empty-response"),
    ],
)
def test_bad_ranked_row(tmp_path, bad, field, reason):
    path = write_jsonl(tmp_path / "ranked.jsonl", [RANKED, bad, RANKED])
    expect_row2_invalid(path, field, reason)


def test_ranked_query_column_is_named_in_errors(tmp_path):
    good = {"query": "Pick one", "responses": ["a", "b"], "scores": [1, 2]}
    path = write_jsonl(tmp_path / "ranked.jsonl", [good, {**good, "query": ""}, good])
    expect_row2_invalid(path, "query", "empty")


@pytest.mark.parametrize(
    "label",
    [pytest.param("yes", id="string"), pytest.param(2, id="int-not-0-or-1"), pytest.param(1.0, id="float"), pytest.param(None, id="null")],
)
def test_unpaired_label_not_bool(tmp_path, label):
    path = write_jsonl(tmp_path / "kto.jsonl", [UNPAIRED, {**UNPAIRED, "label": label}, UNPAIRED])
    with pytest.raises(DataError, match=rf"row 2, field 'label': expected true/false, got {label!r}"):
        load_records(str(path))
    expect_row2_invalid(path, "label", "expected true/false")


def test_conversational_message_list_malformed(tmp_path, byte_tok):
    good = {"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "Hello"}],
            "rejected": [{"role": "assistant", "content": "Bye"}]}
    bad = {**good, "chosen": "Hello"}  # a plain string in a conversational file
    path = write_jsonl(tmp_path / "conv.jsonl", [good, bad, good])
    expect_row2_invalid(path, "chosen", "expected a non-empty list of {role, content} messages", tokenizer=byte_tok)


def test_conversational_needs_a_chat_template(tmp_path):
    from rdo.tiny import byte_tokenizer

    row = {"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "Hello"}],
           "rejected": [{"role": "assistant", "content": "Bye"}]}
    path = write_jsonl(tmp_path / "conv.jsonl", [row])
    no_template = byte_tokenizer()
    no_template.chat_template = None
    for tok in (no_template, None):
        with pytest.raises(ValueError) as info:
            load_records(str(path), tokenizer=tok, skip_invalid=True)  # a file-level problem: nothing to skip
        assert not isinstance(info.value, DataError)
        assert str(info.value).startswith(f"{path}: conversational rows need a tokenizer with a chat template")
        assert "tokenizer.chat_template" in str(info.value)


def test_unknown_format_names_the_columns(tmp_path):
    path = write_jsonl(tmp_path / "odd.jsonl", [{"question": "q", "answer": "a", "id": 1}])
    with pytest.raises(ValueError) as info:
        load_records(str(path))
    msg = str(info.value)
    assert msg.startswith(f"{path}, row 1: cannot tell the row format from its columns ['answer', 'id', 'question']")
    assert "prompt/chosen/rejected" in msg and "prompt/completion/label" in msg


def test_missing_file(tmp_path):
    for name in ("nope.jsonl", "nope.parquet", "nope.csv", "nope.json"):
        with pytest.raises(FileNotFoundError, match=f"{name}: no such file"):
            load_records(str(tmp_path / name))


def test_unsupported_file_type(tmp_path):
    path = tmp_path / "rows.txt"
    path.write_text("prompt chosen rejected\n")
    with pytest.raises(ValueError, match=r"unsupported file type '\.txt'"):
        load_records(str(path))


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    with pytest.raises(ValueError, match=r"empty\.jsonl: no rows"):
        load_records(str(path))


def test_skip_report_summary_counts_by_reason(tmp_path):
    rows = [PAIR, {"prompt": "Q", "rejected": " 5"}, {"prompt": "Q", "rejected": " 6"}, {**PAIR, "chosen": ""}, PAIR]
    loaded = load_records(str(write_jsonl(tmp_path / "mixed.jsonl", rows)), skip_invalid=True)
    assert [r["rdo_row"] for r in loaded.records] == [1, 5]
    assert dict(loaded.skips.counts) == {"chosen: missing": 2, "chosen: empty": 1}
    summary = loaded.skips.summary()
    assert summary.splitlines()[0] == "skipped 3 invalid row(s):"
    assert "     2  chosen: missing   (first: " in summary and "row 2, field 'chosen': missing" in summary


def test_json_file_that_does_not_parse_names_the_file(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text('[{"prompt": "a", "chosen": "b", "rejected": "c"},\n {"prompt": }]')
    with pytest.raises(ValueError, match=r"rows\.json: not valid JSON \(Expecting value at line 2, column 13\)"):
        load_records(str(path))


@pytest.mark.parametrize("text", ['"just a string"', "3", '{"a": [], "b": []}'], ids=["string", "number", "two-lists"])
def test_json_file_that_is_not_a_list_of_rows(tmp_path, text):
    path = tmp_path / "rows.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"rows\.json: expected a JSON list of rows \(or an object holding exactly one list\)"):
        load_records(str(path))


def test_ranked_scores_length_message_gives_both_counts(tmp_path):
    path = write_jsonl(tmp_path / "ranked.jsonl", [RANKED, {**RANKED, "scores": [1.0, 2.0]}, {**RANKED, "scores": 5}])
    with pytest.raises(DataError, match=r"row 2, field 'scores': not one score per response \(expected a list of 3, got 2\)"):
        load_records(str(path))
    loaded = load_records(str(path), skip_invalid=True)
    assert dict(loaded.skips.counts) == {"scores: not one score per response": 2}  # one reason, whatever the counts
    assert loaded.skips.examples["scores: not one score per response"].startswith(f"{path}, row 2, ")
    with pytest.raises(DataError, match=r"row 3, field 'scores': not one score per response \(expected a list of 3, got int\)"):
        load_records(str(write_jsonl(tmp_path / "r3.jsonl", [RANKED, RANKED, {**RANKED, "scores": 5}])))
