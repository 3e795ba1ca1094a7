"""Ends of responses, BOS and generation prompts for three kinds of tokenizer, against literal token lists.

- ChatML: the real SmolLM2-135M-Instruct tokenizer (`<|im_end|>` = 2 is also its EOS and pad, `Ċ` = 198);
- Llama 3 style: the byte tokenizer of `rdo.tiny` with `<|begin_of_text|>` (BOS, added by the
  tokenizer and written by the template), `<|end_of_text|>` (EOS) and `<|eot_id|>` (end of turn);
- no chat template: the byte tokenizer without one (plain-text rows only).
A response must end exactly as the template ends an assistant turn: once, never `<|im_end|>\\n<|im_end|>`.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from rdo.data.chat import assistant_turn_end, end_of_turn_ids, render_prompt
from rdo.data.tokenize import generation_prompt_ids
from rdo.data.formats import Normaliser
from rdo.data.tokenize import Encoder, Truncation
from rdo.score.scorers import PAPER_TEMPLATE, DifferenceEncoder, use_scorer_pad
from rdo.score.scoring import row_sequences

HELLO, THERE, IM_END, NL, BYE, ENDOFTEXT = 19556, 665, 2, 198, 3087, 0  # SmolLM2 ids
BYE_2ND = 85
USER_HI = [{"role": "user", "content": "Hi"}]
CONV_ROW = {"prompt": USER_HI, "chosen": [{"role": "assistant", "content": "Hello there"}],
            "rejected": [{"role": "assistant", "content": "Bye"}]}
PLAIN_ROW = {"prompt": "Hi", "chosen": "Hello there", "rejected": "Bye"}

# Llama 3 style byte tokenizer: bytes are ids 4.., printable c -> ord(c) - 29 (see test_data_tokenize.py)
BOT, EOT_TEXT, START_H, END_H, EOT = 260, 261, 262, 263, 264
LF = 202  # the byte "\n" (ByteLevel writes it as "Ċ")
LLAMA3_TEMPLATE = (
    "{% for message in messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
    "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def byte(text: str) -> list[int]:
    return [ord(ch) - 29 for ch in text]


@pytest.fixture(scope="module")
def smol_dir():
    from rdo.demo.smollm import smollm2_dir

    return str(smollm2_dir())


@pytest.fixture(scope="module")
def smol_tok(smol_dir):
    from rdo.models import load_tokenizer

    return load_tokenizer(smol_dir)


@pytest.fixture(scope="module")
def llama3_tok(tmp_path_factory):
    from tokenizers import processors

    from rdo.models import load_tokenizer
    from rdo.tiny import byte_tokenizer

    tok = byte_tokenizer()
    tok.add_special_tokens({"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>",
                            "additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]})
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A $B", special_tokens=[("<|begin_of_text|>", BOT)])
    tok.chat_template = LLAMA3_TEMPLATE
    path = tmp_path_factory.mktemp("llama3_tok")
    tok.save_pretrained(path)
    return load_tokenizer(str(path))


@pytest.fixture(scope="module")
def plain_tok():
    from rdo.tiny import byte_tokenizer

    tok = byte_tokenizer()
    tok.chat_template = None
    return tok


def encode(tok, raw: dict, fmt: str, max_length=64, max_prompt_length=None) -> dict:
    record = Normaliser("data.jsonl", fmt, tok)(1, raw)
    return Encoder(tok, Truncation(max_length, max_prompt_length)).encode(record, "pair", "data.jsonl")


# --- ChatML (SmolLM2) ------------------------------------------------------------------------

def test_chatml_conversational_response_ends_with_one_turn_end(smol_tok):
    out = encode(smol_tok, CONV_ROW, "conversational")
    assert out["chosen_ids"] == [HELLO, THERE, IM_END, NL]  # not ... IM_END, NL, IM_END
    assert out["rejected_ids"] == [BYE, BYE_2ND, IM_END, NL]
    assert smol_tok.decode(out["prompt_ids"]).endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_chatml_plain_text_rows_get_eos(smol_tok):
    out = encode(smol_tok, PLAIN_ROW, "standard")
    assert out["chosen_ids"] == [HELLO, THERE, IM_END]
    assert out["prompt_ids"] == smol_tok("Hi", add_special_tokens=False)["input_ids"]  # SmolLM2 adds no BOS


def test_chatml_truncation_keeps_the_turn_end(smol_tok):
    row = {**CONV_ROW, "chosen": [{"role": "assistant", "content": "Hello there, general Kenobi"}]}
    prompt_len = len(encode(smol_tok, row, "conversational")["prompt_ids"])
    out = encode(smol_tok, row, "conversational", max_length=prompt_len + 3)
    assert out["chosen_ids"] == [HELLO, IM_END, NL]  # one content token, then the whole turn end
    with pytest.raises(ValueError, match="no room for a response"):
        encode(smol_tok, row, "conversational", max_length=prompt_len + 2)  # one content token + 2 tail tokens do not fit


def test_chatml_generation_prompt_and_stop_ids(smol_tok):
    assert assistant_turn_end(smol_tok) == "<|im_end|>\n"
    assert end_of_turn_ids(smol_tok) == [IM_END]
    text = render_prompt(smol_tok, USER_HI)
    assert text.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert render_prompt(smol_tok, "Hi") == "Hi"
    assert generation_prompt_ids(smol_tok, USER_HI) == encode(smol_tok, CONV_ROW, "conversational")["prompt_ids"]


def test_chatml_difference_model_sees_response_content_without_the_turn_end(smol_tok):
    record = Normaliser("data.jsonl", "conversational", smol_tok)(1, CONV_ROW)
    enc = DifferenceEncoder(smol_tok, "{x}|{y1}|{y2}", Truncation(256, 128))
    xs, ys = enc.query_and_responses([record["prompt"]], [[record["chosen"], record["rejected"]]], [True])
    assert ys == [[[HELLO, THERE], [BYE, BYE_2ND]]]
    seq = enc.assemble(xs[0], *ys[0])
    bar = enc.ids("|")
    assert seq[-(2 * len(bar) + 5):] == bar + [HELLO, THERE] + bar + [BYE, BYE_2ND] + [IM_END]  # one EOS, at the end
    plain = enc.query_and_responses(["Hi"], [["Hello there", "Bye"]], [False])[1]
    assert plain == ys  # a plain-text response and its conversational twin look the same to the model


def test_scorer_pad_is_distinct_from_eos_so_the_head_reads_the_last_token(smol_dir, tmp_path):
    """SmolLM2 pads with its EOS; transformers' head reads the last non-pad token, i.e. the one before EOS."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from rdo.models import load_tokenizer
    from rdo.score.scorers import build_scorer_model

    smol_tok = load_tokenizer(smol_dir)  # its own copy: use_scorer_pad changes it

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(smol_tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "lm")
    enc = Encoder(smol_tok, Truncation(64, None))
    plain = encode(smol_tok, PLAIN_ROW, "standard")
    conv = encode(smol_tok, CONV_ROW, "conversational")
    seqs = [plain["prompt_ids"] + plain["chosen_ids"], conv["prompt_ids"] + conv["chosen_ids"]]
    assert [s[-1] for s in seqs] == [IM_END, NL]

    def read_positions(tok):
        model = build_scorer_model(str(tmp_path / "lm"), tok, "float32").eval()
        from rdo.data.collate import pad_sequences

        ids, mask = pad_sequences(seqs, model.config.pad_token_id)
        with torch.no_grad():
            scores = model(input_ids=ids, attention_mask=mask).logits[:, 0]  # (2,)
            per_position = model.score(model.model(input_ids=ids, attention_mask=mask).last_hidden_state)[..., 0]  # (2, T)
        return [int((per_position[i] == scores[i]).nonzero()[-1]) for i in range(len(seqs))]

    assert smol_tok.pad_token_id == IM_END
    assert read_positions(smol_tok)[0] == len(seqs[0]) - 2  # the bug: the token before the EOS
    assert use_scorer_pad(smol_tok) is False  # no new embedding needed
    assert smol_tok.pad_token_id == ENDOFTEXT
    assert read_positions(smol_tok) == [len(seqs[0]) - 1, len(seqs[1]) - 1]  # the EOS, and the turn end's last token
    assert enc.eos == IM_END


# --- Llama 3 style ---------------------------------------------------------------------------

def test_llama3_conversational_response_ends_with_eot_and_no_eos(llama3_tok):
    out = encode(llama3_tok, CONV_ROW, "conversational")
    assert out["chosen_ids"] == byte("Hello") + [224] + byte("there") + [EOT]  # 224 = the space byte
    assert out["rejected_ids"] == byte("Bye") + [EOT]
    assert out["prompt_ids"] == ([BOT, START_H] + byte("user") + [END_H, LF, LF] + byte("Hi") + [EOT, START_H]
                                 + byte("assistant") + [END_H, LF, LF])  # one BOS (the template's)


def test_llama3_plain_rows_get_bos_and_eos(llama3_tok):
    out = encode(llama3_tok, PLAIN_ROW, "standard")
    assert out["prompt_ids"] == [BOT] + byte("Hi")
    assert out["rejected_ids"] == byte("Bye") + [EOT_TEXT]


def test_llama3_stop_ids_and_truncation(llama3_tok):
    assert end_of_turn_ids(llama3_tok) == [EOT_TEXT, EOT]
    prompt_len = len(encode(llama3_tok, CONV_ROW, "conversational")["prompt_ids"])
    out = encode(llama3_tok, CONV_ROW, "conversational", max_length=prompt_len + 3)
    assert out["chosen_ids"] == byte("He") + [EOT] and out["rejected_ids"] == byte("By") + [EOT]
    assert generation_prompt_ids(llama3_tok, USER_HI) == out["prompt_ids"]
    assert generation_prompt_ids(llama3_tok, "Hi") == [BOT] + byte("Hi")


def test_reward_model_inputs_are_the_policy_ids(llama3_tok):
    """`rdo score` builds reward-model sequences with the same BOS and end rules as `rdo align`."""
    record = Normaliser("data.jsonl", "conversational", llama3_tok)(1, CONV_ROW)
    enc = Encoder(llama3_tok, Truncation(64, None))
    want = enc.encode(record, "pair", "data.jsonl")
    scorer = SimpleNamespace(kind="reward", encoder=enc)
    got = row_sequences(scorer, [record], "pair", True, set(), "data.jsonl")
    n = len(want["prompt_ids"])
    assert got == [[(("s", 0), want["prompt_ids"] + want["chosen_ids"], [(n, n + len(want["chosen_ids"]), 1.0)]),
                    (("s", 1), want["prompt_ids"] + want["rejected_ids"], [(n, n + len(want["rejected_ids"]), 1.0)])]]


def test_difference_model_bos_comes_from_the_one_rule(llama3_tok):
    enc = DifferenceEncoder(llama3_tok, PAPER_TEMPLATE, Truncation(256, 64))
    assert enc.assemble(byte("x"), byte("a"), byte("b")) == (
        [BOT] + byte("Query:") + [224] + byte("x;") + [224] + byte("Response") + [224] + byte("1:") + [224] + byte("a;")
        + [224] + byte("Response") + [224] + byte("2:") + [224] + byte("b") + [EOT_TEXT])


# --- no chat template ------------------------------------------------------------------------

def test_no_template_plain_rows_and_refused_messages(plain_tok):
    out = encode(plain_tok, PLAIN_ROW, "standard")
    assert out == {"prompt_ids": [1] + byte("Hi"), "chosen_ids": byte("Hello") + [224] + byte("there") + [2],
                   "rejected_ids": byte("Bye") + [2], "rdo_row": 1, "length": 15}
    assert assistant_turn_end(plain_tok) == "" and end_of_turn_ids(plain_tok) == [2]
    assert generation_prompt_ids(plain_tok, "Hi") == [1] + byte("Hi")
    with pytest.raises(ValueError, match="chat template"):
        render_prompt(plain_tok, USER_HI)
    with pytest.raises(ValueError, match="chat template"):
        Normaliser("data.jsonl", "conversational", plain_tok)


def test_template_whose_turn_end_has_no_stop_token_gets_eos(byte_tok):
    """rdo.tiny's template ends a turn with a bare '\\n': EOS is still appended, or the model could never stop."""
    out = encode(byte_tok, CONV_ROW, "conversational")
    assert out["chosen_ids"] == byte("Hello") + [224] + byte("there") + [LF, 2]


@pytest.mark.slow  # ~20 s: a real training step of the 135M model
def test_train_rm_on_smollm2_saves_a_pad_distinct_from_eos(smol_dir, tmp_path):
    """Through the command: the saved SmolLM2 scorer pads with <|endoftext|>, and scoring pads with it too."""
    import json

    from rdo.cli import main
    from rdo.score.scorers import load_scorer

    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Q{i}", "chosen": "Hello there", "rejected": "Bye"}) + "\n" for i in range(2)))
    out = tmp_path / "rm"
    assert main(["train-rm", "--model_name_or_path", smol_dir, "--dataset_name", str(data), "--output_dir", str(out),
                 "--use_cpu", "true", "--report_to", "none", "--disable_tqdm", "true", "--max_steps", "1",
                 "--per_device_train_batch_size", "2", "--max_length", "32", "--max_prompt_length", "16"]) == 0
    assert json.loads((out / "config.json").read_text())["pad_token_id"] == ENDOFTEXT
    scorer = load_scorer(str(out), device="cpu")
    assert (scorer.pad_id, scorer.tok.pad_token_id, scorer.tok.eos_token_id) == (ENDOFTEXT, ENDOFTEXT, IM_END)


def test_scorer_pad_is_added_when_the_vocabulary_has_no_spare_special_token(tmp_path):
    """GPT-2 style: EOS is the only special token, so a pad is added and the scorer's embeddings grow by one."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from rdo.score.scorers import build_scorer_model

    vocab = {"</s>": 0, **{ch: i + 1 for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="</s>")
    tok.pad_token = tok.eos_token  # what rdo.models.load_tokenizer does for such tokenizers
    assert use_scorer_pad(tok) is True
    assert (tok.pad_token, tok.pad_token_id, tok.eos_token_id) == ("<|rdo_pad|>", 257, 0)
    from rdo.tiny import tiny_llama

    tiny_llama(257, layers=1, hidden=16, heads=2).save_pretrained(tmp_path / "lm")  # one row per token, no spare
    model = build_scorer_model(str(tmp_path / "lm"), tok, "float32")
    assert model.config.pad_token_id == 257 and model.get_input_embeddings().num_embeddings == 258
