"""Token ids and batches against literal token lists, using the byte tokenizer of `rdo.tiny`.

Byte tokenizer ids (the `byte_tok` fixture): <pad>=0, <s>=1 (BOS), </s>=2 (EOS), <unk>=3, then the
256 ByteLevel symbols in sorted order from id 4. The printable ASCII bytes '!'..'~' sort first, so
a printable character c has id ord(c) - 33 + 4 = ord(c) - 29:

    char   a   b   c   d   e   f   g   h   k   o   q   x   y   z
    id    68  69  70  71  72  73  74  75  78  82  84  91  92  93
"""

from __future__ import annotations

import pytest
import torch

from rdo.data import DataError
from rdo.data.collate import PairCollator
from rdo.data.tokenize import Encoder, Truncation

BOS, EOS, PAD = 1, 2, 0
a, b, c, d, e, f, g, h = 68, 69, 70, 71, 72, 73, 74, 75
k, o, q, x, y, z = 78, 82, 84, 91, 92, 93


def encode(tokenizer, record, kind="pair", max_length=1024, max_prompt_length=512):
    encoder = Encoder(tokenizer, Truncation(max_length=max_length, max_prompt_length=max_prompt_length))
    return encoder.encode({"rdo_row": 1, **record}, kind, "data.jsonl")


def test_byte_ids_are_what_this_file_assumes(byte_tok):
    assert byte_tok("abcdefgh okqxyz", add_special_tokens=False)["input_ids"] == [a, b, c, d, e, f, g, h, 224, o, k, q, x, y, z]
    assert (byte_tok.pad_token_id, byte_tok.bos_token_id, byte_tok.eos_token_id) == (PAD, BOS, EOS)


def test_prompt_gets_bos_and_responses_get_eos(byte_tok):
    out = encode(byte_tok, {"prompt": "ab", "chosen": "c", "rejected": "dd"})
    assert out == {"prompt_ids": [BOS, a, b], "chosen_ids": [c, EOS], "rejected_ids": [d, d, EOS], "rdo_row": 1, "length": 6}


def test_one_token_per_utf8_byte(byte_tok):
    out = encode(byte_tok, {"prompt": "é", "chosen": "x", "rejected": "y"})
    assert out["prompt_ids"] == [BOS, 131, 106]  # 'é' is the two bytes 0xC3 0xA9


def test_bos_is_not_doubled_when_the_prompt_text_starts_with_it(byte_tok):
    out = encode(byte_tok, {"prompt": "<s>ab", "chosen": "c", "rejected": "d"})
    assert out["prompt_ids"] == [BOS, a, b]


def test_no_bos_for_a_tokenizer_that_does_not_add_one():
    from rdo.tiny import byte_tokenizer

    gpt2_style = byte_tokenizer()
    gpt2_style.backend_tokenizer.post_processor = None  # encodes without BOS, like GPT-2
    out = encode(gpt2_style, {"prompt": "ab", "chosen": "c", "rejected": "d"})
    assert out["prompt_ids"] == [a, b]
    assert out["chosen_ids"] == [c, EOS]


def test_prompt_is_truncated_from_the_left_keeping_bos(byte_tok):
    # "abcdefgh" -> [BOS, a..h] (9 tokens); max_prompt_length=4 keeps BOS and the last 3 tokens.
    out = encode(byte_tok, {"prompt": "abcdefgh", "chosen": "x", "rejected": "y"}, max_length=16, max_prompt_length=4)
    assert out["prompt_ids"] == [BOS, f, g, h]
    assert out["chosen_ids"] == [x, EOS] and out["rejected_ids"] == [y, EOS]
    assert out["length"] == 6


def test_prompt_at_max_prompt_length_is_untouched(byte_tok):
    out = encode(byte_tok, {"prompt": "abc", "chosen": "x", "rejected": "y"}, max_length=16, max_prompt_length=4)
    assert out["prompt_ids"] == [BOS, a, b, c]


def test_prompt_without_bos_is_truncated_to_its_last_tokens():
    from rdo.tiny import byte_tokenizer

    gpt2_style = byte_tokenizer()
    gpt2_style.backend_tokenizer.post_processor = None
    out = encode(gpt2_style, {"prompt": "abcdefgh", "chosen": "x", "rejected": "y"}, max_length=16, max_prompt_length=3)
    assert out["prompt_ids"] == [f, g, h]


def test_max_prompt_length_one_keeps_the_last_token(byte_tok):
    out = encode(byte_tok, {"prompt": "abc", "chosen": "x", "rejected": "y"}, max_length=8, max_prompt_length=1)
    assert out["prompt_ids"] == [c]


def test_response_is_truncated_from_the_right_with_eos_kept_last(byte_tok):
    # prompt [BOS, a, b] (3) leaves room 8 - 3 = 5: chosen "cdefgh" + EOS (7) -> 4 content tokens + EOS.
    out = encode(byte_tok, {"prompt": "ab", "chosen": "cdefgh", "rejected": "x"}, max_length=8, max_prompt_length=None)
    assert out["prompt_ids"] == [BOS, a, b]
    assert out["chosen_ids"] == [c, d, e, f, EOS]
    assert out["rejected_ids"] == [x, EOS]  # already fits: untouched
    assert out["length"] == 8


def test_response_that_exactly_fits_is_untouched(byte_tok):
    out = encode(byte_tok, {"prompt": "ab", "chosen": "cdef", "rejected": "x"}, max_length=8, max_prompt_length=None)
    assert out["chosen_ids"] == [c, d, e, f, EOS]


def test_a_response_keeps_one_content_token_at_the_limit(byte_tok):
    # prompt [BOS, a, b, c] (4) leaves room 2: exactly one content token plus EOS.
    out = encode(byte_tok, {"prompt": "abc", "chosen": "xyz", "rejected": "yz"}, max_length=6, max_prompt_length=None)
    assert out["chosen_ids"] == [x, EOS]
    assert out["rejected_ids"] == [y, EOS]
    assert out["length"] == 6


def test_a_prompt_one_token_longer_leaves_no_response_and_is_an_error(byte_tok):
    # prompt [BOS, a, b, c, d] (5) leaves room 1: a response would be EOS alone, which is never allowed.
    with pytest.raises(DataError, match=r"data\.jsonl, row 1, field 'prompt': 5 tokens leave no room for a response within max_length=6"):
        encode(byte_tok, {"prompt": "abcd", "chosen": "xyz", "rejected": "yz"}, max_length=6, max_prompt_length=None)


def test_max_prompt_length_guarantees_response_room(byte_tok):
    # max_prompt_length = max_length - 2 is the largest allowed: every response keeps 1 token + EOS.
    out = encode(byte_tok, {"prompt": "abcdefgh", "chosen": "xyz", "rejected": "z"}, max_length=5, max_prompt_length=3)
    assert out == {"prompt_ids": [BOS, g, h], "chosen_ids": [x, EOS], "rejected_ids": [z, EOS], "rdo_row": 1, "length": 5}


@pytest.mark.parametrize(
    "max_length, max_prompt_length, message",
    [
        (2, None, "max_length=2 is too small"),
        (8, 7, "max_prompt_length=7 must be between 1 and max_length-2=6"),
        (8, 0, "max_prompt_length=0 must be between 1 and max_length-2=6"),
    ],
)
def test_truncation_settings_are_checked(max_length, max_prompt_length, message):
    with pytest.raises(ValueError, match=message):
        Truncation(max_length=max_length, max_prompt_length=max_prompt_length)


def test_ranked_record(byte_tok):
    record = {"prompt": "q", "responses": ["abc", "d", "ef"], "scores": [1.0, 3.0, 2.0]}
    assert encode(byte_tok, record, kind="ranked") == {
        "prompt_ids": [BOS, q],
        "responses_ids": [[a, b, c, EOS], [d, EOS], [e, f, EOS]],
        "scores": [1.0, 3.0, 2.0],
        "rdo_row": 1,
        "length": 6,
    }
    # max_length=5 leaves room 3 for every response.
    truncated = encode(byte_tok, record, kind="ranked", max_length=5, max_prompt_length=None)
    assert truncated["responses_ids"] == [[a, b, EOS], [d, EOS], [e, f, EOS]]
    assert truncated["length"] == 5


def test_unpaired_record(byte_tok):
    record = {"prompt": "q", "completion": "ok", "label": False}
    assert encode(byte_tok, record, kind="unpaired") == {
        "prompt_ids": [BOS, q], "completion_ids": [o, k, EOS], "label": False, "rdo_row": 1, "length": 5
    }
    truncated = encode(byte_tok, record, kind="unpaired", max_length=4, max_prompt_length=None)
    assert truncated["completion_ids"] == [o, EOS]


def test_unknown_kind(byte_tok):
    with pytest.raises(ValueError, match="unknown record kind 'triple'"):
        encode(byte_tok, {"prompt": "q"}, kind="triple")


# -- collator ---------------------------------------------------------------------------------

FEATURES = [
    {"prompt_ids": [BOS, a], "chosen_ids": [b, EOS], "rejected_ids": [c, c, c, EOS], "rdo_row": 7,
     "rdo_weight": 0.5, "ref_chosen_logps": -1.5, "ref_rejected_logps": -4.0},
    {"prompt_ids": [BOS, x, y], "chosen_ids": [z, EOS], "rejected_ids": [q, EOS], "rdo_row": 3,
     "rdo_weight": 2.0, "ref_chosen_logps": -2.25, "ref_rejected_logps": -3.0},
]


def test_pair_collator_layout():
    batch = PairCollator(pad_id=PAD)(FEATURES)
    # Rows 0..1 are prompt+chosen, rows 2..3 prompt+rejected, in feature order; right-padded to 6.
    assert batch["input_ids"].tolist() == [
        [BOS, a, b, EOS, PAD, PAD],
        [BOS, x, y, z, EOS, PAD],
        [BOS, a, c, c, c, EOS],
        [BOS, x, y, q, EOS, PAD],
    ]
    assert batch["attention_mask"].tolist() == [
        [1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1, 0],
    ]
    # 1 exactly on response tokens, EOS included; never on the prompt or on padding.
    assert batch["loss_mask"].tolist() == [
        [0, 0, 1, 1, 0, 0],
        [0, 0, 0, 1, 1, 0],
        [0, 0, 1, 1, 1, 1],
        [0, 0, 0, 1, 1, 0],
    ]
    assert batch["input_ids"].dtype == batch["attention_mask"].dtype == batch["loss_mask"].dtype == torch.long


def test_pair_collator_carries_per_row_values_as_b_tensors():
    batch = PairCollator(pad_id=PAD)(FEATURES)
    assert batch["rdo_row"].dtype == torch.long and batch["rdo_row"].tolist() == [7, 3]
    expected = {"rdo_weight": [0.5, 2.0], "ref_chosen_logps": [-1.5, -2.25], "ref_rejected_logps": [-4.0, -3.0]}
    for key, values in expected.items():
        assert batch[key].shape == (2,), key  # (B,), not (2B,) and not (B, 1)
        assert batch[key].dtype == torch.float32
        assert batch[key].tolist() == values
    assert set(batch) == {"input_ids", "attention_mask", "loss_mask", "rdo_row", *expected}


def test_pair_collator_without_optional_values():
    plain = [{k: v for k, v in feat.items() if k in ("prompt_ids", "chosen_ids", "rejected_ids", "rdo_row")} for feat in FEATURES]
    batch = PairCollator(pad_id=PAD)(plain)
    assert set(batch) == {"input_ids", "attention_mask", "loss_mask", "rdo_row"}


def test_pair_collator_pad_to_multiple_of():
    batch = PairCollator(pad_id=PAD, pad_to_multiple_of=4)(FEATURES)
    assert batch["input_ids"].shape == (4, 8)
    assert batch["input_ids"][0].tolist() == [BOS, a, b, EOS, PAD, PAD, PAD, PAD]
    assert batch["attention_mask"][2].tolist() == [1, 1, 1, 1, 1, 1, 0, 0]
    assert batch["loss_mask"][2].tolist() == [0, 0, 1, 1, 1, 1, 0, 0]
    # A width that is already a multiple is not padded further.
    assert PairCollator(pad_id=PAD, pad_to_multiple_of=3)(FEATURES)["input_ids"].shape == (4, 6)


def test_pair_collator_uses_the_given_pad_id():
    batch = PairCollator(pad_id=EOS)(FEATURES[:1])
    assert batch["input_ids"].tolist() == [[BOS, a, b, EOS, EOS, EOS], [BOS, a, c, c, c, EOS]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]]


def test_encode_then_collate(byte_tok):
    encoder = Encoder(byte_tok, Truncation(max_length=6, max_prompt_length=3))
    records = [
        {"prompt": "ab", "chosen": "x", "rejected": "yz", "rdo_row": 1},
        {"prompt": "abcdef", "chosen": "ghefgh", "rejected": "z", "rdo_row": 2},
    ]
    batch = PairCollator(pad_id=byte_tok.pad_token_id)([encoder.encode(r, "pair", "data.jsonl") for r in records])
    assert batch["input_ids"].tolist() == [
        [BOS, a, b, x, EOS, PAD],
        [BOS, e, f, g, h, EOS],
        [BOS, a, b, y, z, EOS],
        [BOS, e, f, z, EOS, PAD],
    ]
    assert batch["loss_mask"].tolist() == [
        [0, 0, 0, 1, 1, 0],
        [0, 0, 0, 1, 1, 1],
        [0, 0, 0, 1, 1, 1],
        [0, 0, 0, 1, 1, 0],
    ]
    assert batch["rdo_row"].tolist() == [1, 2]
