"""`rdo eval reward`: means, intervals and paired statistics against hand-computed values; reward models by hand."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from conftest import write_jsonl


def length_reward(prompt: str, response: str) -> float:
    """A rule reward for the tests: the response's length (the prompt must arrive as a string)."""
    assert isinstance(prompt, str)
    return float(len(response))


def gen_rows(responses: list[str], prompts=None) -> list[dict]:
    prompts = prompts or [f"q{i}:" for i in range(len(responses))]
    return [{"id": f"p{i}", "rdo_row": i + 1, "prompt": p, "prompt_text": p, "response": r, "sample_index": 0,
             "model": "m", "decoding": {}} for i, (p, r) in enumerate(zip(prompts, responses))]


def run(*argv: str) -> int:
    from rdo.cli import main

    return main(["eval", "reward", *argv])


def test_means_and_paired_stats_match_hand_computed(tmp_path, capsys):
    # lengths A = [3, 1, 4, 5], B = [1, 1, 5, 2]: A - B = [2, 0, -1, 3]
    a = write_jsonl(tmp_path / "A.jsonl", gen_rows(["aaa", "b", "cccc", "ddddd"]))
    b_rows = gen_rows(["x", "y", "zzzzz", "ww"])
    b = write_jsonl(tmp_path / "B.jsonl", list(reversed(b_rows)))  # another order: rows are matched by key, not position
    out = tmp_path / "reward.json"
    assert run("--generations", str(a), str(b), "--reward_fn", "test_eval_reward:length_reward", "--output", str(out), "--bootstrap", "2000") == 0
    result = json.loads(out.read_text())
    assert result["files"] == [{"name": "A", "path": str(a), "n": 4}, {"name": "B", "path": str(b), "n": 4}]
    means = {r["name"]: r for r in result["rewards"]}
    assert means["A"]["mean"] == pytest.approx(13 / 4) and means["B"]["mean"] == pytest.approx(9 / 4)
    assert means["A"]["scorer"] == "test_eval_reward:length_reward" and means["A"]["n"] == 4
    lo, hi = means["A"]["ci95"]
    assert 1 <= lo < 13 / 4 < hi <= 5  # a bootstrap mean stays within the values' range
    [p] = result["paired"]
    assert (p["a"], p["b"], p["n"]) == ("A", "B", 4)
    assert p["mean_diff"] == pytest.approx(1.0)
    assert (p["frac_a_higher"], p["frac_b_higher"], p["frac_tie"]) == (0.5, 0.25, 0.25)
    lo, hi = p["ci95"]
    assert -1 <= lo < 1 < hi <= 3
    printed = capsys.readouterr().out
    assert "| A vs B | test_eval_reward:length_reward | 4 | +1.0000 |" in printed
    assert "| A | test_eval_reward:length_reward | 4 | +3.2500 |" in printed


def test_several_answers_per_prompt_resample_prompts_and_print_the_mde(tmp_path, capsys):
    # 3 prompts x 2 samples. A - B per row: prompt 0 [+2, +4], prompt 1 [0, 0], prompt 2 [-1, +1];
    # per prompt [+3, 0, 0]: the interval and MDE come from those 3 numbers, not from 6 "independent" rows
    def rows(lengths):
        return [{"id": f"p{i // 2}", "prompt": f"q{i // 2}:", "prompt_text": f"q{i // 2}:", "response": "x" * n,
                 "sample_index": i % 2, "model": "m", "decoding": {}} for i, n in enumerate(lengths)]
    a = write_jsonl(tmp_path / "A.jsonl", rows([3, 5, 2, 2, 1, 3]))
    b = write_jsonl(tmp_path / "B.jsonl", rows([1, 1, 2, 2, 2, 2]))
    out = tmp_path / "reward.json"
    assert run("--generations", str(a), str(b), "--reward_fn", "test_eval_reward:length_reward", "--output", str(out),
               "--bootstrap", "4000", "--seed", "1") == 0
    result = json.loads(out.read_text())
    [p] = result["paired"]
    assert (p["n"], p["prompts"]) == (6, 3) and p["mean_diff"] == pytest.approx(1.0)
    from rdo.evaluate.stats import bootstrap_mean, min_detectable_effect

    assert p["ci95"] == bootstrap_mean([3.0, 0.0, 0.0], 4000, 1)["ci95"]
    # the bootstrap se of a mean of 3 values ~ their population sd / sqrt(3) = sqrt(2) / sqrt(3)
    assert p["se"] == pytest.approx((2 / 3) ** 0.5, rel=0.05)
    assert p["mde"] == pytest.approx(2.8016 * p["se"], rel=1e-3) == min_detectable_effect(p["se"])
    assert {r["name"]: r["prompts"] for r in result["rewards"]} == {"A": 3, "B": 3}
    assert f"| {p['mde']:.4f} |" in capsys.readouterr().out


def test_files_on_other_prompts_are_refused(tmp_path, capsys):
    a = write_jsonl(tmp_path / "A.jsonl", gen_rows(["a", "b", "c"]))
    b = write_jsonl(tmp_path / "B.jsonl", gen_rows(["a", "b", "c"], prompts=["q0:", "q1:", "other"]))
    assert run("--generations", str(a), str(b), "--reward_fn", "test_eval_reward:length_reward") == 2
    err = capsys.readouterr().err
    assert "do not hold the same prompts" in err and "1 row(s) only in the first, 1 only in the second" in err
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "q", "sample_index": 0}])
    assert run("--generations", str(bad), "--reward_fn", "test_eval_reward:length_reward") == 2
    assert "bad.jsonl, row 1, field 'response': missing" in capsys.readouterr().err
    assert run("--generations", str(a), "--reward_fn", "nosuch.module:f") == 2
    assert "cannot import" in capsys.readouterr().err


def test_vader_reward_is_the_demo_gold_reward():
    from rdo.demo.task import Vader, vader_reward

    text = "What a wonderful, happy day."
    assert vader_reward("ignored prompt", text) == Vader()(text) > 0.5
    assert vader_reward("p", "This is awful and sad.") < 0


def hand_reward(model, tok, prompt: str, response: str) -> float:
    """r(x, y) as `rdo train-rm` trained it: BOS + prompt + response + EOS, the head's single output."""
    ids = [tok.bos_token_id] + tok(prompt, add_special_tokens=False)["input_ids"] + tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0, 0].item()


def test_reward_model_folders(trained_scorers, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from rdo.config import EvalRewardConfig
    from rdo.evaluate.reward import eval_reward
    from rdo.models import load_tokenizer

    rm = trained_scorers["rm"]
    good = ["abca", "dcb", "bbad", "ac", "dd", "cab"]  # the trained preference: letters a-d beat w-z
    bad = ["wxz", "zzyw", "xwy", "wy", "zz", "yxw"]
    a = write_jsonl(tmp_path / "good.jsonl", gen_rows([" " + g for g in good]))
    b = write_jsonl(tmp_path / "bad.jsonl", gen_rows([" " + x for x in bad]))
    plain = tmp_path / "plain-rm"  # any sequence-classification folder: no rdo.json
    shutil.copytree(rm, plain, ignore=shutil.ignore_patterns("rdo.json"))
    res = eval_reward(EvalRewardConfig(generations=[str(a), str(b)], scorer=[str(rm), str(plain)], device="cpu", bootstrap=200,
                                       max_length=64, max_prompt_length=16, batch_size=4))
    model, tok = AutoModelForSequenceClassification.from_pretrained(rm).eval(), load_tokenizer(str(rm))
    want = {n: [hand_reward(model, tok, f"q{i}:", " " + r) for i, r in enumerate(resp)] for n, resp in (("good", good), ("bad", bad))}
    for r in res["rewards"]:
        assert r["mean"] == pytest.approx(sum(want[r["name"]]) / 6, abs=1e-5), r
    for p in (p for p in res["paired"] if p["scorer"] == str(rm)):
        diffs = [x - y for x, y in zip(want["good"], want["bad"])]
        assert p["mean_diff"] == pytest.approx(sum(diffs) / 6, abs=1e-5)
        assert p["frac_a_higher"] == sum(d > 0 for d in diffs) / 6
        assert p["mean_diff"] > 0 and p["frac_a_higher"] >= 5 / 6  # the reward model learnt the preference
    diff_model = trained_scorers["diff"]
    with pytest.raises(ValueError, match="difference model"):
        eval_reward(EvalRewardConfig(generations=[str(a)], scorer=[str(diff_model)], device="cpu"))


def test_message_list_prompts_reach_the_scorer_through_its_chat_template(trained_scorers, tmp_path):
    """A conversational prompt is rendered as rdo train-rm renders a conversational pair: template, then the reply's turn."""
    from transformers import AutoModelForSequenceClassification

    from rdo.config import EvalRewardConfig
    from rdo.evaluate.reward import eval_reward
    from rdo.models import load_tokenizer

    rm = trained_scorers["rm"]
    msgs = [{"role": "user", "content": "q1:"}]
    rows = [{"rdo_row": 1, "prompt": msgs, "prompt_text": "<|user|>q1:\n<|assistant|>", "response": "abc", "sample_index": 0}]
    a = write_jsonl(tmp_path / "chat.jsonl", rows)
    res = eval_reward(EvalRewardConfig(generations=[str(a)], scorer=[str(rm)], device="cpu", bootstrap=0,
                                       max_length=64, max_prompt_length=40))  # the rendered prompt is not truncated
    model, tok = AutoModelForSequenceClassification.from_pretrained(rm).eval(), load_tokenizer(str(rm))
    # the tiny template: "<|user|>q1:\n<|assistant|>" + "abc\n" (the assistant turn's own closing newline)
    assert res["rewards"][0]["mean"] == pytest.approx(hand_reward(model, tok, "<|user|>q1:\n<|assistant|>", "abc\n"), abs=1e-5)
    assert res["rewards"][0]["ci95"] is None


def test_a_reward_model_without_chat_template_refuses_message_lists(trained_scorers, tmp_path):
    """rdo train-rm trains such a model on strings only: a message-list prompt is refused (file, row, field),
    not scored as the policy's rendering in prompt_text; string prompts are scored as before."""
    from transformers import AutoModelForSequenceClassification

    from rdo.config import EvalRewardConfig
    from rdo.evaluate.reward import eval_reward
    from rdo.models import load_tokenizer

    rm = tmp_path / "rm-no-template"
    shutil.copytree(trained_scorers["rm"], rm, ignore=shutil.ignore_patterns("chat_template.*"))
    config = json.loads((rm / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (rm / "tokenizer_config.json").write_text(json.dumps(config))
    model, tok = AutoModelForSequenceClassification.from_pretrained(rm).eval(), load_tokenizer(str(rm))
    assert not tok.chat_template
    cfg = dict(scorer=[str(rm)], device="cpu", bootstrap=0, max_length=64, max_prompt_length=40)
    msgs = [{"role": "user", "content": "q1:"}]
    rows = [{"rdo_row": 1, "prompt": msgs, "prompt_text": "<|user|>q1:\n<|assistant|>", "response": "abc", "sample_index": 0}]
    chat = write_jsonl(tmp_path / "chat.jsonl", rows)
    with pytest.raises(ValueError, match=r"chat.jsonl, row 1, field 'prompt': a message list, and the reward model .*rm-no-template has no chat template"):
        eval_reward(EvalRewardConfig(generations=[str(chat)], **cfg))
    plain = write_jsonl(tmp_path / "plain.jsonl", gen_rows([" abc"]))
    res = eval_reward(EvalRewardConfig(generations=[str(plain)], **cfg))
    assert res["rewards"][0]["mean"] == pytest.approx(hand_reward(model, tok, "q0:", " abc"), abs=1e-5)


def test_help_lists_the_options(capsys):
    for command, flags in ((["generate"], ["--num_return_sequences", "--do_sample", "--num_beam_groups", "--shard_size"]),
                           (["eval", "reward"], ["--generations", "--scorer", "--reward_fn", "--bootstrap"])):
        from rdo.cli import main

        with pytest.raises(SystemExit) as exit_:
            main([*command, "--help"])
        assert exit_.value.code == 0
        out = capsys.readouterr().out
        assert all(f in out for f in flags), (command, out)
