"""Files that users' editors write: byte-order marks, CRLF, undecodable bytes, blank lines, duplicate
ids, and prompts longer than the limit (counted and reported, never transformers' misleading warning)."""

from __future__ import annotations

import json
import logging

import pytest

from rdo.data import DataError, load_records
from rdo.data.tokenize import Encoder, Truncation, encode_records

ROWS = [
    {"id": "a", "prompt": "p1", "chosen": "c1", "rejected": "r1", "rdo_reward_diff": 1.0},
    {"id": "b", "prompt": "p2", "chosen": "c2", "rejected": "r2", "rdo_reward_diff": 2.0},
    {"id": "c", "prompt": "p3", "chosen": "c3", "rejected": "r3", "rdo_reward_diff": 3.0},
]
BOM = b"\xef\xbb\xbf"


def jsonl_bytes(rows, newline=b"\n") -> bytes:
    return b"".join(json.dumps(r).encode() + newline for r in rows)


def rows_of(loaded) -> list[tuple[int, str, float]]:
    return [(r["rdo_row"], r["id"], r["rdo_reward_diff"]) for r in loaded.records]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"], ids=["lf", "crlf"])
def test_jsonl_with_bom_reads_every_row(tmp_path, newline):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(BOM + jsonl_bytes(ROWS, newline))
    for skip in (False, True):
        loaded = load_records(str(path), skip_invalid=skip)
        assert rows_of(loaded) == [(1, "a", 1.0), (2, "b", 2.0), (3, "c", 3.0)]
        assert loaded.skips.total == 0
        assert loaded.records[0]["prompt"] == "p1" and "\ufeffid" not in loaded.records[0]


def test_json_with_bom_and_crlf(tmp_path):
    path = tmp_path / "bom.json"
    path.write_bytes(BOM + json.dumps(ROWS, indent=1).replace("\n", "\r\n").encode())
    assert rows_of(load_records(str(path))) == [(1, "a", 1.0), (2, "b", 2.0), (3, "c", 3.0)]


def test_csv_with_bom_and_crlf_rows_are_start_lines(tmp_path):
    path = tmp_path / "bom.csv"
    lines = ["id,prompt,chosen,rejected,rdo_reward_diff", "a,p1,c1,r1,1.0", "", 'b,"p2\nsecond line",c2,r2,2.0', "c,p3,c3,r3,3.0"]
    path.write_bytes(BOM + "\r\n".join(lines).encode() + b"\r\n")
    loaded = load_records(str(path), coef_column="rdo_reward_diff")
    assert rows_of(loaded) == [(2, "a", 1.0), (4, "b", 2.0), (6, "c", 3.0)]  # the editor's line of each record
    assert loaded.records[1]["prompt"].replace("\r\n", "\n") == "p2\nsecond line"


def test_blank_lines_do_not_shift_later_rows(tmp_path):
    path = tmp_path / "gaps.jsonl"
    path.write_bytes(b"\n" + jsonl_bytes(ROWS[:1]) + b"  \r\n\n" + jsonl_bytes(ROWS[1:]))
    assert rows_of(load_records(str(path))) == [(2, "a", 1.0), (5, "b", 2.0), (6, "c", 3.0)]


def test_invalid_utf8_line_names_file_and_line_or_is_a_counted_skip(tmp_path):
    path = tmp_path / "bad.jsonl"
    lines = jsonl_bytes(ROWS).splitlines(keepends=True)
    path.write_bytes(lines[0] + b"\n" + lines[1].replace(b"p2", b"p\xff2") + lines[2])
    with pytest.raises(DataError) as e:
        load_records(str(path))
    assert str(e.value).startswith(f"{path}, row 3, field '<line>': not valid UTF-8 (byte 0xff")
    loaded = load_records(str(path), skip_invalid=True)
    assert rows_of(loaded) == [(1, "a", 1.0), (4, "c", 3.0)]
    assert loaded.skips.as_dict() == {"total": 1, "by_reason": {"<line>: not valid UTF-8": 1}}


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_invalid_utf8_in_a_whole_document_names_the_line(tmp_path, suffix):
    path = tmp_path / f"bad{suffix}"
    text = json.dumps(ROWS, indent=1).encode() if suffix == ".json" else b"id,prompt,chosen,rejected\na,p\xff,c,r\n"
    if suffix == ".json":
        text = text.replace(b"p2", b"p\xff2")
    path.write_bytes(text)
    line = text[: text.index(b"\xff")].count(b"\n") + 1
    with pytest.raises(ValueError, match=rf"bad{suffix}: not valid UTF-8 \(byte 0xff on line {line}\)"):
        load_records(str(path))


def test_duplicate_ids_are_an_error_naming_both_rows(tmp_path):
    path = tmp_path / "dups.jsonl"
    path.write_bytes(jsonl_bytes([ROWS[0], ROWS[1], {**ROWS[2], "id": "a"}]))
    for skip in (False, True):  # a duplicate is not an invalid row: --skip_invalid does not pick one for you
        with pytest.raises(DataError, match=r"row 3, field 'id': the same id 'a' as row 1.*--dedupe_ids"):
            load_records(str(path), skip_invalid=skip)


def test_dedupe_ids_keeps_the_first_and_counts_the_rest(tmp_path):
    path = tmp_path / "dups.jsonl"
    path.write_bytes(jsonl_bytes([ROWS[0], {**ROWS[1], "id": "a"}, ROWS[2], {**ROWS[2], "rdo_reward_diff": 9.0}]))
    loaded = load_records(str(path), dedupe_ids=True)
    assert rows_of(loaded) == [(1, "a", 1.0), (3, "c", 3.0)]
    assert loaded.skips.total == 2
    assert "duplicate of row 1" in loaded.skips.summary()


def test_rows_without_ids_are_never_duplicates(tmp_path):
    path = tmp_path / "noid.jsonl"
    path.write_bytes(jsonl_bytes([{k: v for k, v in r.items() if k != "id"} for r in ROWS + ROWS]))
    assert len(load_records(str(path)).records) == 6


def test_truncation_is_counted_with_the_largest_cut_and_no_transformers_warning(tmp_path, byte_tok, caplog):
    rows = [{"prompt": "x" * n, "chosen": "y" * m, "rejected": "z"} for n, m in ((30, 2), (5, 40), (12, 3))]
    path = tmp_path / "long.jsonl"
    path.write_bytes(jsonl_bytes(rows))
    loaded = load_records(str(path))
    byte_tok.model_max_length = 16  # so transformers would warn about "indexing errors"
    byte_tok.deprecation_warnings.pop("sequence-length-is-longer-than-the-specified-maximum", None)
    encoder = Encoder(byte_tok, Truncation(max_length=20, max_prompt_length=10))
    import transformers

    transformers.logging.enable_propagation()  # so caplog would see transformers' own warning
    try:
        with caplog.at_level(logging.WARNING):
            features = encode_records(loaded.records, encoder, "pair", str(path), skip_invalid=False, skips=loaded.skips)
    finally:
        transformers.logging.disable_propagation()
        byte_tok.model_max_length = int(1e30)
    assert len(features) == 3
    # prompts: 31 -> 10 tokens (BOS kept) and 13 -> 10; responses: row 2 keeps 20 - 6 = 14 of 41 tokens
    assert encoder.cuts.as_dict() == {"prompts": 2, "responses": 1, "largest_prompt_cut": 21, "largest_response_cut": 27}
    messages = [r.getMessage() for r in caplog.records]
    assert any("2 prompt(s) lost their beginning (largest cut: 21 tokens" in m and "row 1" in m for m in messages)
    assert any("1 response(s) lost their end (largest cut: 27 tokens" in m and "row 2" in m for m in messages)
    assert not any("indexing errors" in m for m in messages)
