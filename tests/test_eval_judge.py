"""`rdo eval judge` against a real chat-completions server on loopback (tests/judge_server.py).

The aggregation test's table, by hand (A vs B quality q and length; win = A better):

  ex | fair (q)  | longer (len) | biased (first)    | majority
  1  | win       | win          | tie (flip)        | win
  2  | loss      | win          | tie (flip)        | tie (draw)
  3  | tie       | tie          | tie (flip)        | tie
  4  | loss      | loss         | tie (flip)        | loss
  5  | win       | loss         | tie (flip)        | tie (draw)
  6  | win       | win          | tie (flip)        | win
  fair 3/1/2, longer 3/1/2, biased 0/6/0 with consistency 0, majority 2/3/1.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from judge_server import JudgeServer  # noqa: E402

from rdo.cli import main  # noqa: E402
from rdo.config import EvalJudgeConfig  # noqa: E402
from rdo.evaluate.judge import combine_orders, eval_judge, outcome_of, parse_verdict, render  # noqa: E402
from rdo.evaluate.judge_client import Backoff, retry_after_seconds  # noqa: E402
from rdo.evaluate.judge_pairs import majority, matched_examples  # noqa: E402

# (q, length) of A and B per example
TABLE = [((5, 30), (2, 10)), ((1, 30), (4, 10)), ((3, 20), (3, 20)), ((1, 10), (5, 30)), ((4, 10), (2, 30)), ((5, 25), (1, 15))]


@pytest.fixture
def server():
    s = JudgeServer().start()
    yield s
    s.close_all()


def text_of(q: int, length: int, extra: str = "", fill: str = "x") -> str:
    head = f"q={q} {extra}"
    return head + fill * (length - len(head))


def write_generations(tmp_path: Path, table=TABLE, extra_a: dict | None = None) -> tuple[Path, Path]:
    rows_a, rows_b = [], []
    for i, ((qa, la), (qb, lb)) in enumerate(table):
        base = {"id": f"p{i}", "rdo_row": i + 1, "prompt": f"question {i}?", "sample_index": 0, "decoding": {"strategy": "greedy"}}
        rows_a.append({**base, "response": text_of(qa, la, (extra_a or {}).get(i, "")), "model": "A"})
        rows_b.append({**base, "response": text_of(qb, lb, fill="y"), "model": "B"})
    rows_a.append({"id": "only-in-a", "rdo_row": 99, "prompt": "unmatched?", "sample_index": 0, "response": "q=1", "model": "A"})
    random.Random(1).shuffle(rows_b)  # matched by id, not by position
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps(r) + "\n" for r in rows_a))
    b.write_text("".join(json.dumps(r) + "\n" for r in rows_b))
    return a, b


def config(tmp_path: Path, server, models, **kw) -> EvalJudgeConfig:
    a, b = write_generations(tmp_path) if "generations_a" not in kw else (kw.pop("generations_a"), kw.pop("generations_b"))
    defaults = dict(generations_a=str(a), generations_b=str(b), output=str(tmp_path / "judge.json"),
                    judge_base_url=[server.url] * len(models), judge_model=list(models), cache_dir=str(tmp_path / "cache"),
                    max_concurrency=4, request_timeout=0.5, max_retries=3, retry_base_delay=0.01, retry_max_delay=0.05,
                    bootstrap=200)
    return EvalJudgeConfig(**{**defaults, **kw})


def counts(entry: dict) -> tuple[int, int, int]:
    return entry["win"]["n"], entry["tie"]["n"], entry["loss"]["n"]


# --- pure parts ------------------------------------------------------------------------------------

@pytest.mark.parametrize("reply, verdict", [
    ('Long explanation.\n{"score_1": 7, "score_2": 4, "verdict": "1"}', "1"),
    ('```json\n{"verdict": "Response 2"}\n```', "2"),
    ('{"verdict": "tie", "score_1": 9, "score_2": 1}', "tie"),  # the verdict wins over the scores
    ('{"score_1": 3, "score_2": 6}', "2"),  # scores alone decide
    ('{"score_1": 5, "score_2": 5}', "tie"),
    ('First {"verdict": "1"} then on reflection {"verdict": "2"}', "2"),  # the last verdict counts
    ("Response 1 is weak. Final verdict: [[2]]", "2"),
    ("[[A]]", "1"), ("[[C]]", "tie"), ("[[tie]]", "tie"),
    ("After weighing both, Response 1 is clearly better.", "1"),
    ("Verdict: Response 2", "2"),
    ("**Verdict:** Response 1", "1"),
    ('{"winner": "B"}', "2"),
    ('I repeat the format: "verdict": "1" or "2" or "tie"', None),  # an echoed template is no verdict
    ("Both have merits and I would rather not say.", None),
    ('{"verdict": "maybe"}', None), ("", None), (None, None),
])
def test_parse_verdict(reply, verdict):
    assert parse_verdict(reply) == verdict


def test_orders_and_votes():
    assert outcome_of("1", "a_first") == "win" and outcome_of("1", "b_first") == "loss"
    assert outcome_of("2", "b_first") == "win" and outcome_of("tie", "b_first") == "tie"
    assert combine_orders("win", "win") == ("win", True)
    assert combine_orders("win", "loss") == ("tie", False)  # a flip is a tie
    assert combine_orders("win", "tie") == ("tie", False)
    assert combine_orders("win", None) == (None, None)
    assert majority(["win", "win", "loss"]) == "win"
    assert majority(["win", "tie", "loss"]) == "tie"  # three-way draw
    assert majority(["win", None, "loss"]) == "tie"
    assert majority(["loss", None, None]) == "loss"
    assert majority([None, None]) is None


def test_render_keeps_braces_in_responses():
    msgs = render("Q {question} 1 {response_1} 2 {response_2}", "q?", "has {response_2} inside", "b")
    assert msgs == [{"role": "user", "content": "Q q? 1 has {response_2} inside 2 b"}]


def test_backoff_and_retry_after():
    rng = random.Random(0)
    b = Backoff(max_retries=6, base_delay=1.0, max_delay=8.0)
    for k, full in enumerate([1, 2, 4, 8, 8]):
        d = b.delay(k, None, rng)
        assert full / 2 <= d <= full
    assert b.delay(0, 30.0, rng) == 30.0  # a longer Retry-After is honoured
    assert retry_after_seconds("2") == 2.0 and retry_after_seconds("0.5") == 0.5
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    assert 0 <= retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") < 1  # a date in the past: no wait


def test_matching_errors(tmp_path):
    a, b = write_generations(tmp_path)
    examples, info = matched_examples(str(a), str(b))
    assert [e.key for e in examples] == [f"id=p{i}/sample=0" for i in range(6)]
    assert info == {"by": "id", "a_only": 1, "b_only": 0}
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"id": "p0", "prompt": "something else", "response": "r"}) + "\n")
    with pytest.raises(ValueError, match=r"row 1 .* share id=p0/sample=0 but their prompts differ"):
        matched_examples(str(a), str(other))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "p0", "prompt": "question 0?", "response": "r"}) + "\n" + json.dumps({"id": "p1", "prompt": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl, row 2, field 'response': missing"):
        matched_examples(str(bad), str(b))
    none = tmp_path / "none.jsonl"
    none.write_text(json.dumps({"id": "zz", "prompt": "question 0?", "response": "r"}) + "\n")
    with pytest.raises(ValueError, match="share no rows"):
        matched_examples(str(a), str(none))


# --- against the server ----------------------------------------------------------------------------

def test_hand_computed_table_three_judges(tmp_path, server, capsys):
    a, b = write_generations(tmp_path)
    out = tmp_path / "judge.json"
    argv = ["eval", "judge", "--generations_a", str(a), "--generations_b", str(b), "--output", str(out),
            "--judge_base_url", server.url, server.url, server.url, "--judge_model", "fair", "longer", "biased",
            "--cache_dir", str(tmp_path / "cache"), "--num_samples", "300", "--seed", "0", "--max_concurrency", "4",
            "--request_timeout", "5", "--max_retries", "2", "--retry_base_delay", "0.01", "--bootstrap", "200"]
    assert main(argv) == 0
    res = json.loads(out.read_text())
    assert res["n"] == 6 and res["match"] == {"by": "id", "a_only": 1, "b_only": 0}
    fair, longer, biased = res["judges"]
    assert counts(fair) == (3, 1, 2) and fair["position_consistency"] == 1.0
    assert counts(longer) == (3, 1, 2) and longer["position_consistency"] == 1.0
    assert counts(biased) == (0, 6, 0) and biased["position_consistency"] == 0.0
    assert counts(res["majority"]) == (2, 3, 1)
    assert res["majority"]["win"]["rate"] == pytest.approx(2 / 6)
    lo, hi = res["majority"]["win"]["ci95"]
    assert 0 <= lo < 2 / 6 < hi <= 1
    for j in res["judges"]:
        assert j["calls"] == {"ok": 12} and j["replies"] == {"parsed": 12, "unparseable": 0, "failed": 0}
        assert j["base_url"] == server.url
    assert len(server.log) == 36  # 6 examples x 2 orders x 3 judges, each asked once
    details = [json.loads(line) for line in (tmp_path / "judge.examples.jsonl").read_text().splitlines()]
    assert [d["majority"] for d in details] == ["win", "tie", "tie", "loss", "tie", "win"]
    assert [d["judges"][2]["a_first"] for d in details] == ["win"] * 6  # biased: "first" = A, then B
    assert [d["judges"][2]["b_first"] for d in details] == ["loss"] * 6
    assert "majority" in capsys.readouterr().out


def test_faults_are_retried_and_counted(tmp_path, server):
    # every prompt's attempts 1..9 fail in a different way; the 10th is answered
    server.faults["fair"] = [("429", "0"), "500", "not_json", "truncated", "no_choices", "null_content", "slow", "hang", "drop"]
    cfg = config(tmp_path, server, ["fair"], max_retries=9, request_timeout=0.4, num_samples=2, max_concurrency=4)
    res = eval_judge(cfg)
    calls = 2 * 2
    assert res["judges"][0]["calls"] == {"ok": calls, "rate_limited": calls, "server_error": calls, "malformed": 4 * calls,
                                         "timeout": 2 * calls, "connection_error": calls}
    assert len(server.log) == 10 * calls
    assert res["judges"][0]["replies"]["parsed"] == calls  # the verdicts survive the faults


def test_gives_up_records_and_resumes_without_paying_twice(tmp_path, server):
    # "mumbler" is down for now: 500 forever on every prompt (3 attempts per call, then gave_up)
    server.faults["mumbler"] = ["500"] * 1000
    cfg = config(tmp_path, server, ["fair", "mumbler"], max_retries=2)
    res = eval_judge(cfg)
    fair, down = res["judges"]
    assert fair["calls"] == {"ok": 12}
    assert down["calls"] == {"server_error": 36, "gave_up": 12}
    assert down["n"] == 0 and down["missing"] == 6 and down["replies"]["failed"] == 12
    assert counts(res["majority"]) == counts(fair) == (3, 1, 2)  # a judge without verdicts abstains
    details = [json.loads(line) for line in (tmp_path / "judge.examples.jsonl").read_text().splitlines()]
    assert details[0]["judges"][1]["a_first_error"] == "HTTP 500"

    # the server recovers: the rerun asks only the 12 failed calls, nothing of "fair"
    server.faults["mumbler"] = []
    before = len(server.log)
    res2 = eval_judge(cfg)
    new = server.log[before:]
    assert len(new) == 12 and {r["model"] for r in new} == {"mumbler"}
    assert res2["judges"][0]["calls"] == {"cached": 12}
    assert res2["judges"][1]["calls"] == {"ok": 12} and counts(res2["judges"][1]) == (3, 1, 2)

    # a third run pays for nothing and gives the same numbers
    before = len(server.log)
    res3 = eval_judge(cfg)
    assert len(server.log) == before
    for r in (res2, res3):
        for j in r["judges"]:
            j.pop("calls")
    assert res3 == res2

    # the decoding settings are part of the key: a new max_tokens asks everything again
    before = len(server.log)
    eval_judge(config(tmp_path, server, ["fair"], judge_max_tokens=7))
    assert len(server.log) - before == 12


def test_retry_after_is_honoured(tmp_path, server):
    server.faults["fair"] = [("429", "1")]
    cfg = config(tmp_path, server, ["fair"], num_samples=1, max_concurrency=1, retry_base_delay=0.001)
    res = eval_judge(cfg)
    assert res["judges"][0]["calls"] == {"ok": 2, "rate_limited": 2}
    for prompt in {r["prompt"] for r in server.log}:
        t = [r["t"] for r in server.log if r["prompt"] == prompt]
        assert t[1] - t[0] >= 0.95  # waited the server's second, not the 1 ms backoff


def test_concurrency_is_bounded(tmp_path, server):
    server.delay = 0.1
    eval_judge(config(tmp_path, server, ["fair"], max_concurrency=3))
    assert server.max_in_flight == 3  # 12 calls, never more than 3 at once


def test_unparseable_replies_are_recorded(tmp_path, server):
    a, b = write_generations(tmp_path, extra_a={1: "mumble "})  # mumbler says nothing when A is Response 1 on ex 2
    cfg = config(tmp_path, server, ["mumbler"], generations_a=str(a), generations_b=str(b))
    res = eval_judge(cfg)
    j = res["judges"][0]
    assert j["replies"] == {"parsed": 11, "unparseable": 1, "failed": 0}
    assert j["n"] == 5 and j["missing"] == 1 and counts(j) == (3, 1, 1)  # ex 2 (a loss) has no verdict
    assert j["position_consistency"] == 1.0 and j["calls"] == {"ok": 12}


def test_sample_is_fixed_by_seed(tmp_path, server):
    table = [((i % 5, 20), ((i * 3) % 5, 20)) for i in range(20)]
    a, b = write_generations(tmp_path, table)
    picked = {}
    for seed in (0, 1):
        cfg = config(tmp_path, server, ["fair"], generations_a=str(a), generations_b=str(b), num_samples=5, seed=seed,
                     output=str(tmp_path / f"j{seed}.json"))
        res = eval_judge(cfg)
        assert res["n"] == 5 and res["matched"] == 20
        picked[seed] = [json.loads(line)["key"] for line in (tmp_path / f"j{seed}.examples.jsonl").read_text().splitlines()]
        assert picked[seed] == [f"id=p{i}/sample=0" for i in sorted(random.Random(seed).sample(range(20), 5))]
    assert picked[0] != picked[1]


def test_api_key_only_from_env_and_never_written(tmp_path, server, monkeypatch, capfd, caplog):
    secret = "sk-test-9f8e7d6c5b4a-SECRET"
    server.api_key = secret
    server.faults["fair"] = ["500", "drop"]  # errors get recorded too
    monkeypatch.setenv("RDO_TEST_JUDGE_KEY", secret)
    a, b = write_generations(tmp_path)
    argv = ["eval", "judge", "--generations_a", str(a), "--generations_b", str(b), "--output", str(tmp_path / "judge.json"),
            "--judge_base_url", server.url, server.url, "--judge_model", "fair", "longer", "--judge_api_key_env", "RDO_TEST_JUDGE_KEY", "-",
            "--cache_dir", str(tmp_path / "cache"), "--request_timeout", "2", "--max_retries", "3", "--retry_base_delay", "0.01"]
    caplog.set_level("DEBUG")
    assert main(argv) == 0
    res = json.loads((tmp_path / "judge.json").read_text())
    assert res["judges"][0]["calls"] == {"ok": 12, "server_error": 12, "connection_error": 12}  # the key worked
    assert res["judges"][1]["calls"] == {"client_error": 12}  # sent without a key: 401, not retried
    captured = capfd.readouterr()
    assert secret not in captured.out + captured.err + caplog.text
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 4 + 12  # a, b, judge.json, examples and the 12 cached replies of the keyed judge
    for p in files:
        assert secret.encode() not in p.read_bytes(), p

    monkeypatch.delenv("RDO_TEST_JUDGE_KEY")
    assert main(argv) == 2
    err = capfd.readouterr().err
    assert "RDO_TEST_JUDGE_KEY: that environment variable is not set" in err and secret not in err


def test_local_judge_records_unparseable_never_crashes(tmp_path, tiny_model):
    a, b = write_generations(tmp_path)
    short = tmp_path / "short.txt"
    short.write_text("Q: {question}\n1: {response_1}\n2: {response_2}\nBetter (1/2/tie):")
    common = dict(generations_a=str(a), generations_b=str(b), judge_local=[str(tiny_model)], cache_dir=str(tmp_path / "cache"),
                  judge_max_tokens=6, num_samples=3, bootstrap=0, device="cpu")
    res = eval_judge(EvalJudgeConfig(output=str(tmp_path / "short.json"), judge_template=str(short), **common))
    j = res["judges"][0]
    assert j["calls"] == {"ok": 6} and j["base_url"] == "local"
    assert sum(j["replies"].values()) == 6 and j["replies"]["failed"] == 0
    assert j["n"] + j["missing"] == 3
    assert eval_judge(EvalJudgeConfig(output=str(tmp_path / "again.json"), judge_template=str(short), **common))["judges"][0]["calls"] == {"cached": 6}
    # the packaged template is longer than this tiny model's 1024-token context: recorded, not raised
    res = eval_judge(EvalJudgeConfig(output=str(tmp_path / "long.json"), **{**common, "judge_max_tokens": 400}))
    assert res["judges"][0]["calls"] == {"local_error": 6} and res["judges"][0]["n"] == 0
    details = (tmp_path / "long.examples.jsonl").read_text()
    assert "exceed the model's context of 1024" in details


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match="one model name per URL"):
        EvalJudgeConfig(generations_a="a", generations_b="b", output="o", judge_base_url=["u1", "u2"], judge_model=["m"])
    with pytest.raises(ValueError, match="--judge_local MODEL_DIR"):
        EvalJudgeConfig(generations_a="a", generations_b="b", output="o")
    t = tmp_path / "t.txt"
    t.write_text("{question} {response_1}")
    from rdo.evaluate.judge import load_template

    with pytest.raises(ValueError, match=r"missing placeholder\(s\) \{response_2\}"):
        load_template(str(t))
    assert "{response_2}" in load_template(None)  # the packaged default is found


def test_sigkill_mid_run_then_resume_pays_for_nothing_twice(tmp_path, server):
    """A real `rdo eval judge` process killed from outside: every cache entry left is whole; the rerun asks only the rest."""
    import os
    import signal
    import subprocess
    import time

    import rdo

    server.delay = 0.5
    a, b = write_generations(tmp_path)
    cache = tmp_path / "cache"
    argv = ["eval", "judge", "--generations_a", str(a), "--generations_b", str(b), "--output", str(tmp_path / "judge.json"),
            "--judge_base_url", server.url, "--judge_model", "fair", "--cache_dir", str(cache), "--max_concurrency", "2",
            "--request_timeout", "5", "--bootstrap", "0"]
    env = {**os.environ, "PYTHONPATH": str(Path(rdo.__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "rdo.cli", *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    # kill once a reply is cached (not when the server has seen requests: on a loaded machine the
    # client may not have written any reply yet, and the kill would test nothing)
    while not any(cache.rglob("*.json")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert not (tmp_path / "judge.json").exists()
    entries = [p for p in cache.rglob("*.json")]
    for p in entries:  # whole or absent: each parses and is stored under its own key
        assert json.loads(p.read_text())["key"] == p.stem
    done = len(entries)
    assert 0 < done < 12
    (cache / "00").mkdir(exist_ok=True)
    (cache / "00" / f"00ab.json.tmp-{proc.pid}").write_text('{"key": "00ab", "rep')  # what a kill mid-write leaves

    server.delay = 0.0
    before = len(server.log)
    res = eval_judge(config(tmp_path, server, ["fair"], generations_a=str(a), generations_b=str(b)))
    assert len(server.log) - before == 12 - done  # nothing asked twice
    assert res["judges"][0]["calls"] == {"cached": done, "ok": 12 - done}
    assert counts(res["judges"][0]) == (3, 1, 2)  # no verdict lost
    assert not list(cache.rglob("*.tmp-*"))  # the leftover was cleaned
