"""The demo's shipped candidates: answers SmolLM2-135M-Instruct sampled for every prompt of the task.

Sampling ~1000 answers takes longer on a 2-core CPU than the rest of the demo, so it is done once by
`rdo demo --regenerate-data` and the result ships in `data/candidates.jsonl` (one row per prompt:
id, subject, split, prompt, responses). The labels are not in the file: the demo draws them at run
time from the gold reward and its seed (rdo.demo.task.bt_label).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from rdo.utils import atomic

log = logging.getLogger("rdo.demo")
CANDIDATES = Path(__file__).with_name("data") / "candidates.jsonl"
META = CANDIDATES.with_suffix(".meta.json")
# How the shipped file was sampled (recorded in its .meta.json too).
DECODING = {"strategy": "sample", "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 32, "num_return_sequences": 4, "seed": 0}


def sample_answers(model_dir: str | Path, prompts: list[str], decoding: dict, batch_size: int = 16) -> list[list[str]]:
    """`num_return_sequences` answers per prompt from the model's chat template (the demo's one generation call)."""
    from rdo.evaluate.generate import generate
    from rdo.models import load_causal_lm, load_tokenizer

    tok, model = load_tokenizer(str(model_dir)), load_causal_lm(str(model_dir), "float32")
    return generate(model, tok, prompts, strategy=decoding["strategy"], max_new_tokens=decoding["max_new_tokens"],
                    num_return_sequences=decoding.get("num_return_sequences", 1), temperature=decoding.get("temperature", 1.0),
                    top_p=decoding.get("top_p", 1.0), batch_size=batch_size, seed=decoding.get("seed", 0))


def regenerate(model_dir: str | Path, out: str | Path = CANDIDATES, limit: int | None = None) -> dict:
    """Sample the candidates file again from `model_dir` (SmolLM2 for the shipped file)."""
    from rdo.demo.task import prompt_table
    from rdo.utils.fingerprint import model_fingerprint

    table = prompt_table()[:limit]
    start = time.time()
    answers = sample_answers(model_dir, [r["prompt"] for r in table], DECODING)
    rows = [{**r, "responses": a} for r, a in zip(table, answers)]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_jsonl(out, rows)
    meta = {"model": Path(model_dir).name, "model_fingerprint": model_fingerprint(str(model_dir)), "decoding": DECODING,
            "rows": len(rows), "seconds": round(time.time() - start, 1), "command": "rdo demo --regenerate-data"}
    atomic.write_json(out.with_suffix(".meta.json"), meta)
    log.info("wrote %d prompts x %d answers to %s (%.0f s)", len(rows), DECODING["num_return_sequences"], out, meta["seconds"])
    return meta


def load_candidates(path: str | Path = CANDIDATES) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the demo's candidates file is missing; remake it with `rdo demo --regenerate-data`")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for i, r in enumerate(rows, 1):
        if not r.get("prompt") or not isinstance(r.get("responses"), list) or len(r["responses"]) < 2:
            raise ValueError(f"{path}, row {i}: expected a prompt and at least 2 responses")
    return rows
