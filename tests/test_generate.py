"""`rdo generate` and the generation API: batching never changes the text, stopping, sampling streams, resume, 2 processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import free_port, write_jsonl

WORKER = Path(__file__).parent / "scripts" / "mp_generate_worker.py"
PROMPTS = ["say a:", "hello there, how", "xyz", "The quick brown fox jumps", "1+1=", "q"]


def run_cli(*argv: str) -> int:
    from rdo.cli import main

    return main(list(argv))


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def hand_generate(model, tok, text: str, stops: list[int], **kw) -> list[list[int]]:
    """One prompt alone through model.generate: no padding, no batching; ids cut before the first stop."""
    ids = torch.tensor([[tok.bos_token_id] + tok(text, add_special_tokens=False)["input_ids"]])
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), eos_token_id=stops,
                         pad_token_id=tok.pad_token_id, do_sample=False, **kw)[:, ids.shape[1]:].tolist()
    cut = []
    for seq in out:
        end = next((i for i, t in enumerate(seq) if t in stops), len(seq))
        cut.append(seq[:end])
    return cut


@pytest.fixture
def prompt_file(tmp_path):
    rows = [{"id": f"p{i}", "prompt": p, "chosen": " a", "rejected": " b"} for i, p in enumerate(PROMPTS)]
    rows.insert(3, {"id": "dup", "prompt": PROMPTS[1], "chosen": " c", "rejected": " d"})  # generated once
    return write_jsonl(tmp_path / "pairs.jsonl", rows)


def test_greedy_cli_equals_one_prompt_at_a_time(tiny_model, tokenizer, prompt_file, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "gen.jsonl"
    assert run_cli("generate", "--model_name_or_path", str(tiny_model), "--dataset_name", str(prompt_file), "--output", str(out),
                   "--max_new_tokens", "7", "--batch_size", "4", "--shard_size", "4", "--device", "cpu") == 0
    rows = read(out)
    assert [r["id"] for r in rows] == ["p0", "p1", "p2", "p3", "p4", "p5"]  # input order, duplicate prompt once
    assert [r["rdo_row"] for r in rows] == [1, 2, 3, 5, 6, 7]
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    expected = [tokenizer.decode(hand_generate(model, tokenizer, p, [tokenizer.eos_token_id], max_new_tokens=7)[0]) for p in PROMPTS]
    assert [r["response"] for r in rows] == expected
    assert len(set(expected)) > 2  # the prompts really lead to different texts, so order and padding matter
    assert all(r["prompt"] == r["prompt_text"] == p and r["sample_index"] == 0 for r, p in zip(rows, PROMPTS))
    assert rows[0]["decoding"] == {"max_new_tokens": 7, "do_sample": False, "num_beams": 1, "num_return_sequences": 1}
    summary = json.loads((tmp_path / "gen.summary.json").read_text())
    assert summary["duplicate_prompts"] == 1 and summary["rows_written"] == 6
    assert not (tmp_path / "gen.jsonl.shards").exists()


def test_beam_search_equals_one_prompt_at_a_time(tiny_model, tokenizer):
    from transformers import AutoModelForCausalLM

    from rdo.evaluate.generate import generate

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    got = generate(model, tokenizer, PROMPTS, strategy="beam", num_beams=3, num_return_sequences=2, max_new_tokens=5, batch_size=3, chat=False)
    for p, beams in zip(PROMPTS, got):
        want = hand_generate(model, tokenizer, p, [tokenizer.eos_token_id], max_new_tokens=5, num_beams=3,
                             num_return_sequences=2, early_stopping=True, length_penalty=1.0)
        assert beams == [tokenizer.decode(w) for w in want]
        assert beams[0] != beams[1]


def test_model_generation_config_does_not_leak_into_decoding(tiny_model, tokenizer):
    """A checkpoint's generation_config.json (sampling, repetition penalty) must not change greedy text."""
    from transformers import AutoModelForCausalLM

    from rdo.evaluate.generate import generate

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    clean = generate(model, tokenizer, PROMPTS, max_new_tokens=6, chat=False)
    model.generation_config.update(do_sample=True, temperature=3.0, repetition_penalty=5.0, no_repeat_ngram_size=2)
    assert generate(model, tokenizer, PROMPTS, max_new_tokens=6, chat=False) == clean
    assert model.generation_config.repetition_penalty == 5.0  # restored afterwards
    penalised = model.generate(**tokenizer(PROMPTS[:1], return_tensors="pt"), max_new_tokens=6, do_sample=False)
    assert tokenizer.decode(penalised[0, len(tokenizer(PROMPTS[0])["input_ids"]):]) != clean[0][0]  # those settings do change it


def test_sampling_streams_do_not_depend_on_batching(tiny_model, tokenizer):
    from transformers import AutoModelForCausalLM

    from rdo.evaluate.generate import generate

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    kw = dict(strategy="sample", num_return_sequences=3, max_new_tokens=6, chat=False, temperature=1.5)
    batched = generate(model, tokenizer, PROMPTS, batch_size=8, seed=3, **kw)
    alone = [generate(model, tokenizer, [p], batch_size=1, seed=3, **kw)[0] for p in PROMPTS[:1]]
    assert alone[0] == batched[0]
    # the stream is per (prompt index, sample): dropping later prompts from the batch changes nothing
    assert generate(model, tokenizer, PROMPTS[:3], batch_size=2, seed=3, **kw) == batched[:3]
    assert generate(model, tokenizer, PROMPTS, batch_size=8, seed=4, **kw) != batched  # the seed matters
    flat = [s for samples in batched for s in samples]
    assert len(set(flat)) > len(PROMPTS)  # samples differ within a prompt: these are draws, not greedy copies
    # top_k = 1 leaves one token to draw: sampling must then equal greedy exactly
    greedy = generate(model, tokenizer, PROMPTS, strategy="greedy", max_new_tokens=6, chat=False)
    assert [s[:1] for s in generate(model, tokenizer, PROMPTS, top_k=1, seed=9, **kw)] == greedy


def test_gumbel_sampler_draws_from_the_softmax():
    """10k draws of one row from fixed logits: the frequencies match softmax(logits / T)."""
    from rdo.evaluate.generate import Decoding, GumbelSampler

    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    sampler = GumbelSampler([7], Decoding(do_sample=True, temperature=2.0))
    counts = torch.zeros(4)
    for _ in range(10000):
        counts[sampler(None, logits.clone()).argmax()] += 1
    assert torch.allclose(counts / 10000, torch.softmax(logits[0] / 2.0, -1), atol=0.015)


def eot_tokenizer():
    """The byte tokenizer with an end-of-turn special token that is not EOS (as Llama-3's <|eot_id|>)."""
    from rdo.tiny import byte_tokenizer

    tok = byte_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<|end|>"]})
    tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>\n{% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    return tok


def test_stop_token_ids_find_the_end_of_turn(byte_tok):
    from rdo.data.chat import end_of_turn_ids
    from rdo.evaluate.generate import stop_token_ids

    tok = eot_tokenizer()
    end = tok.convert_tokens_to_ids("<|end|>")
    assert end_of_turn_ids(tok) == [tok.eos_token_id, end] and stop_token_ids(tok) == sorted([tok.eos_token_id, end])
    assert end_of_turn_ids(byte_tok) == [byte_tok.eos_token_id]  # rdo.tiny's template ends turns with a plain "\n": not a stop token
    assert stop_token_ids(byte_tok) == [byte_tok.eos_token_id]


def test_stops_at_end_of_turn_and_hides_template_tokens(tmp_path):
    """A model whose greedy answer hits <|end|> (not EOS) after a few tokens: the response stops there."""
    from rdo.config import GenerateConfig
    from rdo.evaluate.generate import Decoding, generate_command, generate_ids, prompt_token_ids
    from rdo.tiny import tiny_llama

    tok = eot_tokenizer()
    end = tok.convert_tokens_to_ids("<|end|>")
    model = tiny_llama(len(tok))
    prompt = [{"role": "user", "content": "say a:"}]
    text = tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    free = hand_generate(model, tok, text, [tok.eos_token_id], max_new_tokens=6)[0]
    with torch.no_grad():  # tied embeddings: <|end|>'s output row = 3x the third greedy token's, so it wins by then
        model.get_input_embeddings().weight[end] = 3 * model.get_input_embeddings().weight[free[2]]
    folder = tmp_path / "eot-model"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    want = hand_generate(model, tok, text, [tok.eos_token_id, end], max_new_tokens=6)[0]
    raw = model.generate(**tok(text, return_tensors="pt"), max_new_tokens=6, do_sample=False, eos_token_id=[tok.eos_token_id, end])
    assert end in raw[0].tolist() and len(want) < 6  # the model really emits <|end|> early

    data = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": prompt}, {"prompt": "plain"}])  # prompt-only rows
    out = tmp_path / "gen.jsonl"
    generate_command(GenerateConfig(model_name_or_path=str(folder), dataset_name=str(data), output=str(out), max_new_tokens=6, device="cpu"))
    rows = read(out)
    assert rows[0]["prompt"] == prompt and rows[0]["prompt_text"] == text
    assert rows[0]["response"] == tok.decode(want) and "<|end|>" not in rows[0]["response"]
    assert rows[1]["prompt_text"] == "plain"  # a string prompt stays as given unless --chat_text_prompts
    # the token ids too: decoding skips special tokens, so text alone would not show a missed stop
    assert generate_ids(model, tok, prompt_token_ids(tok, [text]), Decoding(max_new_tokens=6)) == [[want]]
    assert json.loads((tmp_path / "gen.summary.json").read_text())["hit_max_new_tokens"] == 1  # only "plain" ran to the cap


@pytest.mark.slow
def test_smollm2_chatml_stops_at_im_end(tmp_path):
    """The real ChatML template: the answer ends at <|im_end|>, which is not part of the response."""
    from rdo.demo.smollm import smollm2_dir
    from rdo.evaluate.generate import generate, stop_token_ids
    from rdo.models import load_causal_lm, load_tokenizer

    path = smollm2_dir()
    tok, model = load_tokenizer(str(path)), load_causal_lm(str(path), "float32")
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert im_end in stop_token_ids(tok, model)
    [[answer]] = generate(model, tok, ["What is 2+2?"], max_new_tokens=20)
    text = tok.apply_chat_template([{"role": "user", "content": "What is 2+2?"}], tokenize=False, add_generation_prompt=True)
    ids = tok(text, return_tensors="pt", add_special_tokens=False)
    raw = model.generate(**ids, max_new_tokens=20, do_sample=False, eos_token_id=im_end, pad_token_id=tok.pad_token_id)[0, ids["input_ids"].shape[1]:].tolist()
    assert im_end in raw  # stopped by end of turn, not by max_new_tokens
    assert answer == tok.decode(raw[: raw.index(im_end)], skip_special_tokens=True)
    assert answer.strip() and "<|im_end|>" not in answer and "<|im_start|>" not in answer


def test_resume_after_a_kill_loses_and_doubles_nothing(tiny_model, prompt_file, tmp_path):
    from rdo.config import GenerateConfig
    from rdo.evaluate.generate import generate_command

    def cfg(out, **kw):
        return GenerateConfig(model_name_or_path=str(tiny_model), dataset_name=str(prompt_file), output=str(out), do_sample=True,
                              num_return_sequences=2, max_new_tokens=5, shard_size=2, batch_size=3, device="cpu", **kw)

    whole = tmp_path / "whole.jsonl"
    generate_command(cfg(whole))

    class Killed(Exception):
        pass

    def kill_after_first(name):
        raise Killed(name)

    out = tmp_path / "resumed.jsonl"
    with pytest.raises(Killed):
        generate_command(cfg(out), on_shard=kill_after_first)
    assert not out.exists() and len(list((tmp_path / "resumed.jsonl.shards").glob("chunk-*.jsonl"))) == 1
    with pytest.raises(ValueError, match="different run"):  # other settings must not mix with the kept shard
        generate_command(cfg(out, seed=1))
    written = []
    generate_command(cfg(out), on_shard=written.append)
    assert len(written) == 2  # 6 prompts in shards of 2: the first shard was kept, not redone
    assert read(out) == read(whole)
    assert len(read(out)) == 12 and len({(r["rdo_row"], r["sample_index"]) for r in read(out)}) == 12


def test_lora_adapter_folder_is_detected(tiny_model, tokenizer, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from rdo.evaluate.generate import generate

    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model),
                                LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False))
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    merged = peft_model.merge_and_unload()
    want = generate(merged, tokenizer, PROMPTS, max_new_tokens=6, chat=False)
    base = generate(AutoModelForCausalLM.from_pretrained(tiny_model), tokenizer, PROMPTS, max_new_tokens=6, chat=False)
    assert want != base  # the adapter changes the text, so using the bare base would fail below
    data = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": p} for p in PROMPTS])
    out = tmp_path / "gen.jsonl"
    assert run_cli("generate", "--model_name_or_path", str(adapter), "--dataset_name", str(data), "--output", str(out),
                   "--max_new_tokens", "6", "--device", "cpu") == 0
    assert [[r["response"]] for r in read(out)] == want


def test_bad_settings_and_rows_are_one_line_errors(tiny_model, tmp_path, capsys):
    data = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "ok"}, {"prompt": ""}, {"prompt": "fine"}])
    base = ["generate", "--model_name_or_path", str(tiny_model), "--dataset_name", str(data), "--device", "cpu", "--max_new_tokens", "3"]
    assert run_cli(*base, "--output", str(tmp_path / "a.jsonl")) == 2
    assert "row 2" in capsys.readouterr().err
    assert run_cli(*base, "--output", str(tmp_path / "b.jsonl"), "--skip_invalid") == 0
    assert [r["rdo_row"] for r in read(tmp_path / "b.jsonl")] == [1, 3]
    assert json.loads((tmp_path / "b.summary.json").read_text())["skipped"]["total"] == 1
    assert run_cli(*base, "--output", str(tmp_path / "c.jsonl"), "--num_return_sequences", "2") == 2
    assert "--do_sample" in capsys.readouterr().err
    assert run_cli(*base, "--output", str(tmp_path / "d.jsonl"), "--num_beams", "4", "--num_beam_groups", "4", "--diversity_penalty", "1.0") == 2
    err = capsys.readouterr().err
    import transformers.generation.utils as gu
    from transformers.generation.configuration_utils import GenerationMode

    if "/" in gu.GENERATION_MODES_MAPPING[GenerationMode.GROUP_BEAM_SEARCH]:  # moved out of this transformers
        assert "diverse beam search" in err and "pip install" in err



@pytest.mark.multiproc
def test_two_processes_write_what_one_process_writes(tiny_model, prompt_file, tmp_path):
    flags = ["--model_name_or_path", str(tiny_model), "--dataset_name", str(prompt_file), "--do_sample", "true",
             "--num_return_sequences", "2", "--max_new_tokens", "5", "--shard_size", "1", "--batch_size", "2", "--device", "cpu"]
    one = tmp_path / "one.jsonl"
    assert run_cli("generate", *flags, "--output", str(one)) == 0
    two = tmp_path / "two.jsonl"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
         str(WORKER), str(tmp_path / "ranks"), "generate", *flags, "--output", str(two)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads((tmp_path / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]  # really two processes
    assert all(r["shards_written"] for r in ranks)  # both generated a share
    assert sorted(s for r in ranks for s in r["shards_written"]) == [f"chunk-{i:05d}" for i in range(6)]
    assert read(two) == read(one)


def test_progress_bar_reports_the_real_elapsed_time_and_rates(tiny_model, prompt_file, tmp_path, capsys):
    """The bar's elapsed time, seq/s and tok/s come from one clock (tqdm's): mixing time.time with
    time.perf_counter printed elapsed times of ~500,000 hours and rates of ~10^7 s/seq."""
    import re
    import time

    from rdo.config import GenerateConfig
    from rdo.evaluate.generate import generate_command

    t0 = time.perf_counter()
    summary = generate_command(GenerateConfig(model_name_or_path=str(tiny_model), dataset_name=str(prompt_file),
                                              output=str(tmp_path / "gen.jsonl"), max_new_tokens=5, batch_size=2, device="cpu"))
    wall = time.perf_counter() - t0
    final = capsys.readouterr().err.split("\r")[-1]  # the closed bar's last state
    m = re.search(r"6/6 \[([\d:]+)<[^,]*, *([\d.]+)(seq/s|s/seq), tok_per_s=([\d.]+)\]", final)
    assert m, final
    elapsed = sum(int(x) * 60**i for i, x in enumerate(reversed(m[1].split(":"))))  # [h:]mm:ss
    assert elapsed <= wall + 1, final
    rate = float(m[2]) if m[3] == "seq/s" else 1 / float(m[2])
    assert rate >= 6 / (wall + 1), final  # at least the 6 prompts over the whole call's time
    tokens = summary["mean_response_tokens"] * summary["rows_written"]
    assert tokens > 0 and float(m[4]) >= tokens / (wall + 1), final
