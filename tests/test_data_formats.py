"""Every accepted row format, and every file type, loads into the canonical records of `rdo.data.formats`.

Each test writes a small file, loads it with `load_records` and compares the records exactly:
format fields are normalised, every other column (an `id`, the coefficient `rdo_reward_diff`)
passes through untouched, and `rdo_row` is the 1-based source row.
"""

from __future__ import annotations

import json

import pytest
from conftest import write_jsonl

from rdo.data import load_records

STANDARD_ROWS = [
    {"id": "s1", "prompt": "Q: 2+2?", "chosen": " 4", "rejected": " 5", "rdo_reward_diff": 1.25},
    {"id": "s2", "prompt": "Q: capital of France?", "chosen": " Paris", "rejected": " Lyon", "rdo_reward_diff": -0.5},
]
STANDARD_RECORDS = [dict(r, rdo_row=i) for i, r in enumerate(STANDARD_ROWS, start=1)]


def test_trl_standard(tmp_path):
    path = write_jsonl(tmp_path / "standard.jsonl", STANDARD_ROWS)
    loaded = load_records(str(path), coef_column="rdo_reward_diff")
    assert (loaded.fmt, loaded.kind, loaded.source) == ("standard", "pair", str(path))
    assert loaded.records == STANDARD_RECORDS
    assert loaded.skips.total == 0


def test_rdo_row_is_the_editors_line_number_blank_lines_included(tmp_path):
    path = tmp_path / "gaps.jsonl"
    path.write_text(json.dumps(STANDARD_ROWS[0]) + "\n\n   \n" + json.dumps(STANDARD_ROWS[1]) + "\n\n")
    assert [r["rdo_row"] for r in load_records(str(path)).records] == [1, 4]


def test_extra_columns_pass_through_untouched(tmp_path):
    meta = {"source": "web", "turns": [1, 2], "score": None}
    row = {"prompt": "p", "chosen": "c", "rejected": "r", "id": 17, "rdo_reward_diff": 0.75, "meta": meta}
    loaded = load_records(str(write_jsonl(tmp_path / "extra.jsonl", [row])))
    assert loaded.records == [{**row, "rdo_row": 1}]


def test_trl_conversational_is_rendered_with_the_chat_template(tmp_path, byte_tok):
    # The tiny template renders each message as "<|role|>content\n"; the generation prompt is "<|assistant|>".
    rows = [
        {
            "id": "c1",
            "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}],
            "chosen": [{"role": "assistant", "content": "Hello."}],
            "rejected": [{"role": "assistant", "content": "Go away."}],
            "rdo_reward_diff": 2.0,
        },
        {
            "id": "c2",
            "prompt": [{"role": "user", "content": "1+1"}],
            "chosen": [{"role": "assistant", "content": "2"}],
            "rejected": [{"role": "assistant", "content": "3"}],
            "rdo_reward_diff": 0.5,
        },
    ]
    loaded = load_records(str(write_jsonl(tmp_path / "conv.jsonl", rows)), tokenizer=byte_tok)
    assert (loaded.fmt, loaded.kind) == ("conversational", "pair")
    assert loaded.records == [
        {
            "id": "c1",
            "prompt": "<|system|>Be brief.\n<|user|>Hi?\n<|assistant|>",
            "chosen": "Hello.\n",
            "rejected": "Go away.\n",
            "rdo_reward_diff": 2.0,
            "rdo_row": 1,
            "rdo_chat": True,
        },
        {
            "id": "c2",
            "prompt": "<|user|>1+1\n<|assistant|>",
            "chosen": "2\n",
            "rejected": "3\n",
            "rdo_reward_diff": 0.5,
            "rdo_row": 2,
            "rdo_chat": True,
        },
    ]


def test_anthropic_hh_transcripts_split_at_the_last_assistant_turn(tmp_path):
    shared = "\n\nHuman: What is 2+2?\n\nAssistant: 4.\n\nHuman: Are you sure?\n\nAssistant:"
    rows = [
        {"chosen": shared + " Yes, it is 4.", "rejected": shared + " No, it is 5.", "id": "h1"},
        {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!", "rejected": "\n\nHuman: Hi\n\nAssistant: What?", "id": "h2"},
    ]
    loaded = load_records(str(write_jsonl(tmp_path / "hh.jsonl", rows)))
    assert (loaded.fmt, loaded.kind) == ("hh", "pair")
    assert loaded.records == [
        {
            "prompt": "\n\nHuman: What is 2+2?\n\nAssistant: 4.\n\nHuman: Are you sure?\n\nAssistant:",
            "chosen": " Yes, it is 4.",
            "rejected": " No, it is 5.",
            "id": "h1",
            "rdo_row": 1,
        },
        {"prompt": "\n\nHuman: Hi\n\nAssistant:", "chosen": " Hello!", "rejected": " What?", "id": "h2", "rdo_row": 2},
    ]


def test_dahoas_rm_static_keeps_response_as_a_passthrough_column(tmp_path):
    row = {
        "prompt": "\n\nHuman: Name a colour.\n\nAssistant:",
        "response": " Blue.",
        "chosen": " Blue.",
        "rejected": " Seven.",
    }
    loaded = load_records(str(write_jsonl(tmp_path / "dahoas.jsonl", [row])))
    assert (loaded.fmt, loaded.kind) == ("standard", "pair")
    assert loaded.records == [{**row, "rdo_row": 1}]


def test_ranked_with_prompt(tmp_path):
    rows = [
        {"id": "r1", "prompt": "Pick a number", "responses": ["one", "two", "three"], "scores": [1, 3, 2]},
        {"id": "r2", "prompt": "Say hi", "responses": ["hi", "bye"], "scores": [0.5, -1.5], "rdo_reward_diff": [2.0]},
    ]
    loaded = load_records(str(write_jsonl(tmp_path / "ranked.jsonl", rows)))
    assert (loaded.fmt, loaded.kind) == ("ranked", "ranked")
    assert loaded.records == [
        {"id": "r1", "prompt": "Pick a number", "responses": ["one", "two", "three"], "scores": [1.0, 3.0, 2.0], "rdo_row": 1},
        {"id": "r2", "prompt": "Say hi", "responses": ["hi", "bye"], "scores": [0.5, -1.5], "rdo_reward_diff": [2.0], "rdo_row": 2},
    ]
    assert all(isinstance(s, float) for r in loaded.records for s in r["scores"])


def test_ranked_with_query(tmp_path):
    row = {"query": "Say hi", "responses": ["hi", "bye"], "scores": [2, 1]}
    loaded = load_records(str(write_jsonl(tmp_path / "ranked_query.jsonl", [row])))
    assert loaded.fmt == "ranked"
    # The canonical `prompt` is added; the original `query` column passes through.
    assert loaded.records == [
        {"query": "Say hi", "prompt": "Say hi", "responses": ["hi", "bye"], "scores": [2.0, 1.0], "rdo_row": 1}
    ]


def test_unpaired_kto(tmp_path):
    rows = [
        {"prompt": "2+2=", "completion": "4", "label": True, "id": "u1"},
        {"prompt": "2+2=", "completion": "5", "label": False, "id": "u2"},
        {"prompt": "3+3=", "completion": "6", "label": 1, "id": "u3"},  # 0/1 ints are accepted as labels
    ]
    loaded = load_records(str(write_jsonl(tmp_path / "kto.jsonl", rows)))
    assert (loaded.fmt, loaded.kind) == ("unpaired", "unpaired")
    assert loaded.records == [
        {"prompt": "2+2=", "completion": "4", "label": True, "id": "u1", "rdo_row": 1},
        {"prompt": "2+2=", "completion": "5", "label": False, "id": "u2", "rdo_row": 2},
        {"prompt": "3+3=", "completion": "6", "label": True, "id": "u3", "rdo_row": 3},
    ]
    assert all(type(r["label"]) is bool for r in loaded.records)


# -- file types: the same rows through every reader ---------------------------------------------


def _json_list(path, rows):
    path.write_text(json.dumps(rows))


def _json_object_holding_a_list(path, rows):
    path.write_text(json.dumps({"train": rows}))


def _parquet(path, rows):
    import datasets

    datasets.Dataset.from_list(rows).to_parquet(str(path))


def _csv(path, rows):
    import datasets

    datasets.Dataset.from_list(rows).to_csv(str(path), index=False)


def _saved_dataset(path, rows):
    import datasets

    datasets.Dataset.from_list(rows).save_to_disk(str(path))


def _saved_dataset_dict(path, rows):
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(path))


@pytest.mark.parametrize(
    "name, write",
    [
        ("rows.json", _json_list),
        ("wrapped.json", _json_object_holding_a_list),
        ("rows.parquet", _parquet),
        ("rows.csv", _csv),
        ("saved", _saved_dataset),
        ("saved_dict", _saved_dataset_dict),
    ],
)
def test_every_file_type_gives_the_same_records(tmp_path, name, write):
    path = tmp_path / name
    write(path, STANDARD_ROWS)
    loaded = load_records(str(path), coef_column="rdo_reward_diff")
    assert loaded.fmt == "standard"
    # a CSV row is the line it starts on (the header is line 1); elsewhere the position in the list
    offset = 1 if name.endswith(".csv") else 0
    assert loaded.records == [{**r, "rdo_row": r["rdo_row"] + offset} for r in STANDARD_RECORDS]


def test_saved_dataset_dict_picks_the_split(tmp_path):
    import datasets

    path = tmp_path / "splits"
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(STANDARD_ROWS[:1]), "test": datasets.Dataset.from_list(STANDARD_ROWS[1:])}
    ).save_to_disk(str(path))
    assert load_records(str(path), split="test").records == [{**STANDARD_ROWS[1], "rdo_row": 1}]
    with pytest.raises(ValueError, match=r"no split 'dev' \(has \['train', 'test'\]\); pass --dataset_split"):
        load_records(str(path), split="dev")


def test_parquet_empty_cell_is_a_missing_field(tmp_path):
    # Parquet/CSV store a missing value as a null cell; it must read as "missing", not as the text "None".
    rows = [STANDARD_ROWS[0], {**STANDARD_ROWS[1], "chosen": None}]
    path = tmp_path / "holes.parquet"
    _parquet(path, rows)
    loaded = load_records(str(path), skip_invalid=True)
    assert loaded.records == STANDARD_RECORDS[:1]
    assert dict(loaded.skips.counts) == {"chosen: missing": 1}


def test_conversational_rows_with_implicit_prompt(tmp_path, byte_tok):
    """TRL's implicit-prompt layout: chosen/rejected are whole conversations sharing their first turns."""
    user = {"role": "user", "content": "Hi?"}
    row = {"chosen": [user, {"role": "assistant", "content": "Hello."}],
           "rejected": [user, {"role": "assistant", "content": "Go away."}], "id": 7}
    data = write_jsonl(tmp_path / "implicit.jsonl", [row])
    loaded = load_records(str(data), tokenizer=byte_tok)
    rec = loaded.records[0]
    assert loaded.fmt == "conversational"
    assert (rec["prompt"], rec["chosen"], rec["rejected"]) == ("<|user|>Hi?\n<|assistant|>", "Hello.\n", "Go away.\n")
    assert rec["id"] == 7 and isinstance(rec["chosen"], str)
