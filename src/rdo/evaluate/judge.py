"""`rdo eval judge`: pairwise LLM-as-judge of two generations files (paper section 4.1, appendix E.2, Tables 12-13).

- Each sampled example is judged by every judge in both orders (A as Response 1, then B as Response 1).
  A verdict that changes with the order counts as a tie; each judge's position-consistency rate is
  the fraction of examples whose two parsed verdicts agree.
- The prompt (a replaceable template file) asks for an explanation first, then scores, then a JSON
  verdict line; replies are parsed as JSON, else as text ([[1]], "Verdict: Response 2", ...). An
  unparseable reply or a failed call leaves that judge without a verdict on the example (counted).
- Several judges: the majority of the judges' verdicts per example (a draw is a tie), plus one row
  per judge. Rates (win = A better) with bootstrap 95% intervals from rdo.evaluate.stats.
- Replies are cached per call (rdo.evaluate.judge_cache): a rerun asks only what was never answered.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from importlib import resources
from pathlib import Path

from tqdm.auto import tqdm

from rdo.utils import atomic
from rdo.config import EvalJudgeConfig
from rdo.evaluate.judge_cache import ReplyCache
from rdo.evaluate.judge_client import Backoff, CallResult, HTTPJudge, LocalJudge
from rdo.evaluate.judge_pairs import OUTCOMES, Example, majority, matched_examples, sample_examples
from rdo.evaluate.stats import format_rate, rate_cis

log = logging.getLogger("rdo.eval")

PLACEHOLDERS = ("question", "response_1", "response_2")
ORDERS = ("a_first", "b_first")  # a_first: A is Response 1
NO_KEY = ("", "-", "none")  # --judge_api_key_env entries for a judge that needs no key


# --- the prompt ------------------------------------------------------------------------------------

def load_template(path: str | None) -> str:
    """The judge prompt: `path`, or the packaged default; it must hold {question}, {response_1} and {response_2}."""
    if path is None:
        return resources.files("rdo.evaluate").joinpath("judge_template.txt").read_text(encoding="utf-8")
    text = Path(path).read_text(encoding="utf-8")
    missing = [p for p in PLACEHOLDERS if "{" + p + "}" not in text]
    if missing:
        raise ValueError(f"--judge_template {path}: missing placeholder(s) {', '.join('{' + p + '}' for p in missing)}")
    return text


def render(template: str, question: str, first: str, second: str) -> list[dict]:
    """Chat messages for one call; one pass, so a response that contains '{response_2}' stays literal."""
    values = {"question": question, "response_1": first, "response_2": second}
    text = re.sub(r"\{(question|response_1|response_2)\}", lambda m: values[m.group(1)], template)
    return [{"role": "user", "content": text}]


# --- verdicts --------------------------------------------------------------------------------------

_WORDS = {"1": "1", "2": "2", "a": "1", "b": "2", "c": "tie", "tie": "tie", "equal": "tie", "draw": "tie", "both": "tie"}
_TEXT_PATTERNS = [
    re.compile(r"\[\[\s*(1|2|a|b|c|tie)\s*\]\]", re.I),  # [[1]] / [[A]] / [[C]] / [[tie]]
    re.compile(r"verdict\W{0,3}\s*(?:is\s*)?:?\s*\**\"?\s*((?:response|assistant)\s*[12ab]\b|[12]\b|tie\b)(?!\s*\"?\s*or\b)", re.I),
    re.compile(r"\b(?:response|assistant)\s*([12ab])\b\s+is\s+(?:clearly\s+|slightly\s+|much\s+)?(?:the\s+)?better", re.I),
    re.compile(r"\bit(?:'s| is) an? (tie)\b|\bboth responses are (?:equally good|equal)|\b(tie)\b\.?\s*$", re.I),
]


def _word(value) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    s = str(value).strip().lower().strip("[]\"'*. ")
    s = re.sub(r"^(?:response|assistant|answer)[\s_]*", "", s)
    return _WORDS.get(s)


def _from_json(obj: dict) -> str | None:
    low = {str(k).lower(): v for k, v in obj.items()}
    for name in ("verdict", "winner", "better", "choice", "preferred"):
        if name in low and (v := _word(low[name])):
            return v
    s1, s2 = low.get("score_1"), low.get("score_2")
    if all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in (s1, s2)):
        return "1" if s1 > s2 else "2" if s2 > s1 else "tie"
    return None


def parse_verdict(reply: str | None) -> str | None:
    """"1", "2" or "tie" (by position) from a judge's reply; the last verdict given wins; None if none is readable."""
    if not reply:
        return None
    found = None
    decoder = json.JSONDecoder()
    for m in re.finditer(r"\{", reply):
        try:
            obj, _ = decoder.raw_decode(reply, m.start())
        except ValueError:
            continue
        if isinstance(obj, dict) and (v := _from_json(obj)):
            found = v
    if found:
        return found
    last = None  # (position, verdict) of the last text match over all patterns
    for pattern in _TEXT_PATTERNS:
        for m in pattern.finditer(reply):
            group = next(g for g in m.groups() if g is not None) if any(m.groups()) else "tie"
            v = _word(group)
            if v and (last is None or m.start() > last[0]):
                last = (m.start(), v)
    return last[1] if last else None


def outcome_of(verdict: str | None, order: str) -> str | None:
    """A positional verdict -> win / tie / loss for A (win = A better)."""
    if verdict is None:
        return None
    if verdict == "tie":
        return "tie"
    a_won = (verdict == "1") == (order == "a_first")
    return "win" if a_won else "loss"


def combine_orders(a_first: str | None, b_first: str | None) -> tuple[str | None, bool | None]:
    """(outcome, consistent) from the two orders' outcomes: agreement stands, a flip is a tie, a missing one is no verdict."""
    if a_first is None or b_first is None:
        return None, None
    return (a_first, True) if a_first == b_first else ("tie", False)


# --- calls -----------------------------------------------------------------------------------------

def build_judges(cfg: EvalJudgeConfig) -> list:
    decoding = cfg.decoding
    backoff = Backoff(cfg.max_retries, cfg.retry_base_delay, cfg.retry_max_delay)
    envs = cfg.judge_api_key_env or [""]
    if len(envs) == 1:
        envs = envs * len(cfg.judge_base_url)
    judges = []
    for url, model, env in zip(cfg.judge_base_url, cfg.judge_model, envs):
        key = None
        if env.lower() not in NO_KEY:
            key = os.environ.get(env)
            if not key:
                raise ValueError(f"--judge_api_key_env {env}: that environment variable is not set; export it with the API key of {url}")
        judges.append(HTTPJudge(url, model, key, timeout=cfg.request_timeout, backoff=backoff, decoding=decoding,
                                max_connections=cfg.max_concurrency))
    for folder in cfg.judge_local:
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"--judge_local {folder}: no such model folder")
        judges.append(LocalJudge(folder, decoding=decoding, device=cfg.device))
    return judges


def ask_all(judges: list, prompts: list[list[dict]], cache: ReplyCache, decoding: dict, max_concurrency: int):
    """Every judge's reply to every prompt (cached ones read, the rest asked with bounded concurrency).

    Returns replies[j][p] (str or None), errors[j][p] (str or None) and each judge's Counter of outcomes:
    `cached` per call read from disk, then one count per attempt (ok, rate_limited, ...) and `gave_up`.
    """
    replies = [[None] * len(prompts) for _ in judges]
    errors = [[None] * len(prompts) for _ in judges]
    counts = [Counter() for _ in judges]
    todo: dict[tuple[int, str], list[int]] = {}  # (judge, cache key) -> prompts asking it (identical prompts asked once)
    for j, judge in enumerate(judges):
        for p, messages in enumerate(prompts):
            key = cache.key(judge.identity, messages, decoding)
            if (j, key) in todo:
                todo[(j, key)].append(p)
            elif (reply := cache.get(key)) is not None:
                replies[j][p] = reply
                counts[j]["cached"] += 1
            else:
                todo[(j, key)] = [p]
    if not todo:
        return replies, errors, counts
    pool = ThreadPoolExecutor(max_workers=max_concurrency)
    try:
        futures = {pool.submit(judges[j].complete, prompts[ps[0]]): (j, key, ps) for (j, key), ps in todo.items()}
        for fut in tqdm(as_completed(futures), total=len(futures), desc="judge calls", unit="call"):
            j, key, ps = futures[fut]
            try:
                result: CallResult = fut.result()
            except Exception as e:  # e.g. a local model's generation failing: recorded, the other calls go on
                result = CallResult(None, ["exception"], judges[j].scrub(f"{type(e).__name__}: {e}"))
            counts[j].update(result.attempts)
            if result.reply is not None:
                cache.put(key, judges[j].identity, result.reply)  # stored the moment it arrives
            for p in ps:
                replies[j][p], errors[j][p] = result.reply, result.error
    finally:  # on Ctrl-C, calls not yet started are dropped (what arrived is already cached)
        pool.shutdown(wait=True, cancel_futures=True)
    return replies, errors, counts


# --- the command -----------------------------------------------------------------------------------

def judge_examples(examples: list[Example], judges: list, template: str, cache: ReplyCache, cfg: EvalJudgeConfig):
    """Per judge, per example: the two orders' verdicts and the combined outcome; plus the call counts."""
    prompts = []
    for ex in examples:
        prompts.append(render(template, ex.question, ex.a, ex.b))  # a_first
        prompts.append(render(template, ex.question, ex.b, ex.a))  # b_first
    replies, errors, counts = ask_all(judges, prompts, cache, cfg.decoding, cfg.max_concurrency)
    table = []  # table[j][i]: that judge on that example
    for j in range(len(judges)):
        rows = []
        for i in range(len(examples)):
            entry = {}
            for o, order in enumerate(ORDERS):
                reply, error = replies[j][2 * i + o], errors[j][2 * i + o]
                verdict = parse_verdict(reply)
                entry[order] = outcome_of(verdict, order) if reply is not None else None
                entry[f"{order}_status"] = "failed" if reply is None else "parsed" if verdict else "unparseable"
                entry[f"{order}_reply"] = reply
                if error and reply is None:
                    entry[f"{order}_error"] = error
            entry["outcome"], entry["consistent"] = combine_orders(entry["a_first"], entry["b_first"])
            rows.append(entry)
        table.append(rows)
    return table, counts


def summarise(outcomes: list[str | None], cfg: EvalJudgeConfig) -> dict:
    given = [o for o in outcomes if o is not None]
    return {"n": len(given), "missing": len(outcomes) - len(given), **rate_cis(given, OUTCOMES, cfg.bootstrap, cfg.seed)}


def eval_judge(cfg: EvalJudgeConfig) -> dict:
    examples, match = matched_examples(cfg.generations_a, cfg.generations_b)
    sample = sample_examples(examples, cfg.num_samples, cfg.seed)
    log.info("judging %d of %d matched examples (matched by %s)", len(sample), len(examples), match["by"])
    template = load_template(cfg.judge_template)
    judges = build_judges(cfg)
    cache = ReplyCache(cfg.cache_dir)
    if removed := cache.clean():
        log.info("%s: removed %d leftover(s) of a killed run", cfg.cache_dir, removed)
    try:
        table, counts = judge_examples(sample, judges, template, cache, cfg)
    finally:
        for judge in judges:
            judge.close()

    result = {"a": cfg.generations_a, "b": cfg.generations_b, "n": len(sample), "matched": len(examples), "match": match,
              "seed": cfg.seed, "judges": []}
    for judge, rows, calls in zip(judges, table, counts):
        checked = [r["consistent"] for r in rows if r["consistent"] is not None]
        status = Counter(r[f"{o}_status"] for r in rows for o in ORDERS)
        result["judges"].append({
            "model": judge.model, "base_url": judge.base_url, **summarise([r["outcome"] for r in rows], cfg),
            "position_consistency": sum(checked) / len(checked) if checked else None,
            "replies": {k: status.get(k, 0) for k in ("parsed", "unparseable", "failed")},
            "calls": dict(sorted(calls.items())),
        })
    votes = [majority([rows[i]["outcome"] for rows in table]) for i in range(len(sample))]
    result["majority"] = summarise(votes, cfg)

    for judge, entry, rows in zip(judges, result["judges"], table):
        failed = entry["replies"]["failed"]
        if failed:
            last = next((r[f"{o}_error"] for r in reversed(rows) for o in ORDERS if f"{o}_error" in r), "no message")
            log.warning("%s at %s: %d of %d calls failed (last: %s); a rerun asks them again",
                        judge.model, judge.base_url, failed, 2 * len(rows), last)
    atomic.write_json(cfg.output, result, ensure_ascii=False)
    details = Path(cfg.output).with_suffix(".examples.jsonl")
    atomic.write_jsonl(details, (
        {"key": ex.key, "row_a": ex.row_a, "row_b": ex.row_b, "majority": votes[i],
         "judges": [{"model": judge.model, **rows[i]} for judge, rows in zip(judges, table)]}
        for i, ex in enumerate(sample)))
    print(format_table(result))
    log.info("wrote %s and %s", cfg.output, details)
    return result


def format_table(result: dict) -> str:
    def pct(s: dict) -> str:
        return format_rate(s, "     -          ")

    lines = [f"A = {result['a']}\nB = {result['b']}\n{result['n']} examples, each judged in both orders\n",
             f"{'judge':32s} {'n':>4s}  {'win (A better) %':18s} {'tie %':18s} {'loss %':18s} {'consistent':>10s}  calls"]
    for j in result["judges"]:
        cons = f"{100 * j['position_consistency']:9.1f}%" if j["position_consistency"] is not None else f"{'-':>10s}"
        calls = ", ".join(f"{k} {v}" for k, v in j["calls"].items())
        lines.append(f"{j['model'][-32:]:32s} {j['n']:4d}  {pct(j['win']):18s} {pct(j['tie']):18s} {pct(j['loss']):18s} {cons}  {calls}")
    m = result["majority"]
    lines.append(f"{'majority':32s} {m['n']:4d}  {pct(m['win']):18s} {pct(m['tie']):18s} {pct(m['loss']):18s}")
    return "\n".join(lines)
