"""The shared interval helpers and atomic writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from rdo.utils import atomic
from rdo.evaluate.stats import bootstrap_ci, paired_bootstrap_ci, rate_cis


def test_bootstrap_of_a_constant_is_that_constant():
    assert bootstrap_ci([0.25] * 7, 200, 0) == pytest.approx([0.25, 0.25])


def test_bootstrap_is_seeded_and_brackets_the_mean():
    v = [0, 1, 1, 0, 1, 1, 1, 0, 1, 1]
    lo, hi = bootstrap_ci(v, 2000, 3)
    assert lo < 0.7 < hi and 0.3 < lo and hi <= 1.0
    assert bootstrap_ci(v, 2000, 3) == [lo, hi]
    assert bootstrap_ci([], 100, 0) is None and bootstrap_ci(v, 0, 0) is None


def test_paired_bootstrap_is_the_bootstrap_of_differences():
    a, b = [1.0, 2.0, 3.0, 5.0], [0.5, 2.5, 1.0, 5.0]
    assert paired_bootstrap_ci(a, b, 500, 1) == bootstrap_ci([0.5, -0.5, 2.0, 0.0], 500, 1)
    with pytest.raises(ValueError):
        paired_bootstrap_ci([1.0], [1.0, 2.0])


def test_rates_are_counts_over_n_with_intervals_from_one_resampling():
    out = rate_cis(["win", "win", "tie", "loss", "win"], ("win", "tie", "loss"), 1000, 0)
    assert {c: out[c]["n"] for c in out} == {"win": 3, "tie": 1, "loss": 1}
    assert out["win"]["rate"] == 0.6 and out["tie"]["rate"] == 0.2
    for c in out:
        lo, hi = out[c]["ci95"]
        assert 0 <= lo <= out[c]["rate"] <= hi <= 1
    with pytest.raises(ValueError, match="not among"):
        rate_cis(["draw"], ("win", "loss"))


def test_atomic_write_replaces_whole_and_leaves_no_tmp(tmp_path):
    p = tmp_path / "m.json"
    atomic.write_json(p, {"a": 1})
    atomic.write_json(p, {"a": 2})
    assert json.loads(p.read_text()) == {"a": 2}
    assert [x.name for x in tmp_path.iterdir()] == ["m.json"]


def test_a_killed_writer_leaves_the_old_file_and_a_cleanable_tmp(tmp_path):
    p = tmp_path / "rows.jsonl"
    atomic.write_jsonl(p, [{"i": 0}])
    code = (
        "import os, sys; from rdo.utils import atomic\n"
        "def rows():\n"
        "    yield {'i': 1}\n"
        "    os._exit(9)  # killed mid-write\n"
        f"atomic.write_jsonl({str(p)!r}, rows())\n"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    assert p.read_text() == '{"i": 0}\n'  # the reader still sees the complete old file
    left = [x for x in tmp_path.iterdir() if x != p]
    assert left and all(atomic.TMP_TAG in x.name for x in left)
    assert atomic.clean_leftovers(tmp_path) == left and list(tmp_path.iterdir()) == [p]


def test_model_fingerprint_follows_the_weights_not_the_path(tmp_path, tiny_model):
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    from rdo.utils.fingerprint import model_fingerprint

    copy = tmp_path / "copy"
    shutil.copytree(tiny_model, copy)
    assert model_fingerprint(str(copy)) == model_fingerprint(str(tiny_model))  # same content, other path
    before = model_fingerprint(str(copy))
    m = AutoModelForCausalLM.from_pretrained(copy)
    with torch.no_grad():
        m.model.norm.weight.add_(1e-3)  # same shapes, same file size, other values
    m.save_pretrained(copy)
    assert model_fingerprint(str(copy)) != before


def test_tokenizer_fingerprint_sees_the_chat_template(byte_tok):
    import copy

    from rdo.utils.fingerprint import tokenizer_fingerprint

    other = copy.deepcopy(byte_tok)
    assert tokenizer_fingerprint(other) == tokenizer_fingerprint(byte_tok)
    other.chat_template = "{{ messages[0]['content'] }}"
    assert tokenizer_fingerprint(other) != tokenizer_fingerprint(byte_tok)
