"""`rdo demo`: the task's labels, the frozen-backbone scorer option, and the tiny preset end to end (twice: same seed, same table)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

pytest.importorskip("vaderSentiment")


def test_bt_labels_are_wrong_at_the_rate_the_temperature_says():
    from rdo.demo.task import bt_label, p_wrong

    rng = random.Random(0)
    gaps = [0.1, 0.5, 1.0] * 4000
    wrong = sum(not bt_label(g, 0.0, 0.3, rng) for g in gaps) / len(gaps)
    expected = sum(1 / (1 + math.exp(g / 0.3)) for g in gaps) / len(gaps)  # sigmoid(-gap / tau), by hand
    assert wrong == pytest.approx(expected, abs=0.01)
    assert p_wrong(1.0, 0.0, 0.3) == pytest.approx(1 / (1 + math.exp(1 / 0.3)))
    assert all(bt_label(0.2, 0.1, 0.0, rng) for _ in range(100))  # tau = 0: the gold order, always
    assert p_wrong(0.5, 0.5, 0.3) == 0.5


def test_vader_reward_reads_text_or_messages():
    from rdo.demo.task import vader_reward

    good, bad = "What a wonderful, lovely day!", "This is awful and I hate it."
    assert vader_reward("p", good) > 0.5 > -0.5 > vader_reward("p", bad)
    assert vader_reward("p", [{"role": "assistant", "content": good}]) == vader_reward("p", good)


def test_prompts_are_split_by_subject():
    from rdo.demo.task import prompt_table

    table = prompt_table()
    train = {r["subject"] for r in table if r["split"] == "train"}
    test = {r["subject"] for r in table if r["split"] == "test"}
    assert len(table) == 256 and len({r["prompt"] for r in table}) == 256
    assert not train & test and len(test) == 16


def test_freeze_backbone_trains_only_the_head(tiny_model, tmp_path):
    from safetensors.torch import load_file

    from conftest import synthetic_pairs, write_jsonl
    from rdo.config import TrainRMConfig
    from rdo.score.training import train_rm

    data = write_jsonl(tmp_path / "p.jsonl", synthetic_pairs(16))
    common = dict(model_name_or_path=str(tiny_model), dataset_name=str(data), use_cpu=True, report_to="none",
                  disable_tqdm=True, per_device_train_batch_size=8, max_steps=2, head_learning_rate=1e-2, learning_rate=1e-2)
    train_rm(TrainRMConfig(output_dir=str(tmp_path / "rm"), freeze_backbone=True, **common))
    base = load_file(tiny_model / "model.safetensors")
    trained = load_file(tmp_path / "rm" / "model.safetensors")
    backbone = [k for k in trained if k.startswith("model.")]
    assert backbone and all((trained[k] == base[k]).all() for k in backbone)  # bit-identical: no step touched them
    # the same run unfrozen moves the backbone: the check above can fail
    train_rm(TrainRMConfig(output_dir=str(tmp_path / "rm2"), **common))
    moved = load_file(tmp_path / "rm2" / "model.safetensors")
    assert any(not (moved[k] == base[k]).all() for k in backbone)
    with pytest.raises(ValueError, match="freeze_backbone"):
        TrainRMConfig(output_dir=str(tmp_path / "x"), freeze_backbone=True, lora_r=4, **common)


def test_regenerate_data_writes_candidates(tmp_path):
    from rdo.demo.candidates import DECODING, load_candidates, regenerate
    from rdo.tiny import build_tiny_model

    model = build_tiny_model(tmp_path / "m")
    meta = regenerate(model, tmp_path / "c.jsonl", limit=2)
    rows = load_candidates(tmp_path / "c.jsonl")
    assert [r["id"] for r in rows] == ["s00t0", "s00t1"] and meta["rows"] == 2
    assert all(len(r["responses"]) == DECODING["num_return_sequences"] for r in rows)
    assert json.loads((tmp_path / "c.meta.json").read_text())["model_fingerprint"] == meta["model_fingerprint"]


def test_shipped_candidates_are_small_and_complete():
    from rdo.demo.candidates import CANDIDATES, DECODING, load_candidates
    from rdo.demo.task import prompt_table

    rows = load_candidates()
    assert [r["prompt"] for r in rows] == [r["prompt"] for r in prompt_table()]
    assert all(len(r["responses"]) == DECODING["num_return_sequences"] for r in rows)
    assert CANDIDATES.stat().st_size < 400_000


def test_gold_rewards_means_and_paired_differences(tmp_path):
    from rdo.demo.pipeline import gold_rewards
    from rdo.demo.task import vader_reward

    texts = {"a": ["A wonderful, happy day.", "It was fine.", "Terrible."], "b": ["A sad day.", "It was great!", "Terrible."]}
    files = {}
    for name, answers in texts.items():
        files[name] = tmp_path / f"{name}.jsonl"
        files[name].write_text("".join(json.dumps({"id": f"p{i}", "prompt": "q", "response": t, "sample_index": 0}) + "\n" for i, t in enumerate(answers)))
    out = gold_rewards(files, baseline="a")  # eval reward compares (a, b): read here as "b minus a"
    (d,) = out["paired"]
    assert (d["a"], d["b"]) == ("b", "a") and d["mean_diff"] == pytest.approx(
        sum(vader_reward("q", y) - vader_reward("q", x) for x, y in zip(texts["a"], texts["b"])) / 3)
    out = gold_rewards(files, baseline="b")
    g = {n: [vader_reward("q", t) for t in ts] for n, ts in texts.items()}
    means = {w["name"]: w["mean"] for w in out["rewards"]}
    assert means == pytest.approx({n: sum(v) / 3 for n, v in g.items()})
    (d,) = out["paired"]
    assert (d["a"], d["b"], d["n"]) == ("a", "b", 3)
    assert d["mean_diff"] == pytest.approx(sum(x - y for x, y in zip(g["a"], g["b"])) / 3)
    assert (d["frac_a_higher"], d["frac_b_higher"], d["frac_tie"]) == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    assert d["ci95"][0] <= d["mean_diff"] <= d["ci95"][1]


def test_validation_split_never_reads_the_heldout_prompts():
    from rdo.demo.candidates import load_candidates
    from rdo.demo.pipeline import PRESETS, VALIDATION_PROMPTS, make_pairs

    rows = load_candidates()
    train_ids = [r["id"] for r in rows if r["split"] == "train"]
    test_ids = {r["id"] for r in rows if r["split"] == "test"}
    splits, stats = make_pairs(rows, PRESETS["smollm2"], 0.3, 0, validation=True)
    assert {q["prompt_id"] for q in splits["scorer_train"]} == set(train_ids[:-VALIDATION_PROMPTS])
    assert {q["prompt_id"] for q in splits["heldout_true"]} <= set(train_ids[-VALIDATION_PROMPTS:])  # (a prompt can be all gold ties)
    assert {q["id"] for q in splits["test_prompts"]} == set(train_ids[-VALIDATION_PROMPTS:]) and not test_ids & set(train_ids)
    # validation: every pair of a prompt's distinct answers, gold ties left out
    assert stats["heldout_pairs"] + stats["gold_ties_test"] == VALIDATION_PROMPTS * 6
    # DPO: the disjoint pairs of the first prompts, by id, with the labels the scorers saw
    by_id = {q["id"]: q for q in splits["scorer_train"]}
    dpo = splits["dpo_train"]
    assert len(dpo) == PRESETS["smollm2"].dpo_pairs and all(by_id[q["id"]] == q and q["id"].endswith(("-01", "-23")) for q in dpo)
    normal, _ = make_pairs(rows, PRESETS["smollm2"], 0.3, 0)
    assert {q["prompt_id"] for q in normal["heldout_true"]} <= test_ids


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_tiny_demo_end_to_end_is_deterministic(tmp_path):
    """The whole pipeline on a tiny model, twice with one seed: the same table; its numbers recounted by hand."""
    from rdo.cli import main
    from rdo.demo.task import vader_reward

    runs = [tmp_path / "a", tmp_path / "b"]
    for out in runs:
        assert main(["demo", "--preset", "tiny", "--output_dir", str(out), "--seed", "3"]) == 0
    reports = [json.loads((out / "report.json").read_text()) for out in runs]
    for r in reports:
        r.pop("seconds"), r.pop("cpu_seconds"), r.pop("minutes"), r["gold"].pop("files")  # times and the run folder's paths differ
    assert reports[0] == reports[1]
    tables = [(out / "table.md").read_text().split("Stage times")[0] for out in runs]
    assert tables[0] == tables[1]
    r, out = reports[0], runs[0]

    # labels: wrong ones recounted from the texts with the gold reward
    train = _read(out / "data" / "scorer_train.jsonl")
    wrong = sum(vader_reward(None, t["chosen"]) < vader_reward(None, t["rejected"]) for t in train)
    assert r["labels"]["wrong_labels"] == wrong and r["labels"]["train_pairs"] == len(train) == 12 * 6  # every pair of 4 answers
    dpo = _read(out / "data" / "dpo_train.jsonl")
    assert dpo == [t for t in train if t["id"].endswith(("-01", "-23"))][:12]  # the disjoint pairs of the first 6 prompts
    held = _read(out / "data" / "heldout_true.jsonl")
    assert held and all(vader_reward(None, h["chosen"]) > vader_reward(None, h["rejected"]) for h in held)
    assert r["accuracy"]["rm"]["n_pairs"] == r["accuracy"]["diff"]["n_pairs"] == len(held)

    # DPO+rc runs were weighted by their scorer's R, plain DPO was not
    scored = _read(out / "data" / "scored_diff.jsonl")
    assert [s["id"] for s in scored] == [d["id"] for d in dpo] and all("rdo_reward_diff" in s for s in scored)
    assert r["coefficients"]["dpo"]["policy"]["alpha"] == 0 and r["coefficients"]["dpo+rc (difference model)"]["policy"]["alpha"] == 0.5

    # gold means and paired differences recomputed from the generations
    gens = {w["name"]: _read(out / "generations" / f"{w['name'].replace('+', '_').replace(' (', '_').replace(')', '').replace(' ', '_')}.jsonl")
            for w in r["gold"]["rewards"]}
    assert set(gens) == {"base", "dpo", "dpo+rc (reward model)", "dpo+rc (difference model)", "dpo (true labels)"}
    # the true-label run trains on DPO's pairs with every wrong label flipped, and nothing else changed
    true = _read(out / "data" / "dpo_true.jsonl")
    assert [t["id"] for t in true] == [d["id"] for d in dpo] and any(d["label_wrong"] for d in dpo)
    for t, d in zip(true, dpo):
        flipped = (d["rejected"], d["chosen"]) if d["label_wrong"] else (d["chosen"], d["rejected"])
        assert (t["chosen"], t["rejected"]) == flipped and not t["label_wrong"] and t["prompt"] == d["prompt"]
    assert r["coefficients"]["dpo (true labels)"]["policy"]["alpha"] == 0
    gold = {n: [vader_reward(None, g["response"]) for g in rows] for n, rows in gens.items()}
    for w in r["gold"]["rewards"]:
        assert w["n"] == 6 and w["mean"] == pytest.approx(sum(gold[w["name"]]) / 6)
        assert w["ci95"][0] <= w["mean"] <= w["ci95"][1]
    for d in r["gold"]["paired"]:
        assert d["b"] == "dpo"
        assert d["mean_diff"] == pytest.approx(sum(a - b for a, b in zip(gold[d["a"]], gold["dpo"])) / 6)
    assert "| dpo+rc (difference model) |" in tables[0] and "95% CI" in tables[0] and "| MDE |" in tables[0]
    from rdo.evaluate.stats import min_detectable_effect

    assert all(d["mde"] == pytest.approx(min_detectable_effect(d["se"])) for d in r["gold"]["paired"])


def test_recipe_overrides_update_one_command_and_are_checked():
    from rdo.config import DemoConfig
    from rdo.demo.pipeline import PRESETS, with_recipe

    base = PRESETS["smollm2"]
    p = with_recipe(base, {"rm": {"pooling": "last"}, "dpo_pairs": 8, "pairing": "disjoint"})
    assert p.rm == {**base.rm, "pooling": "last"} and p.diff == base.diff and (p.dpo_pairs, p.pairing) == (8, "disjoint")
    with pytest.raises(ValueError, match="'rms' is not a preset field"):
        with_recipe(base, {"rms": {}})
    with pytest.raises(ValueError, match="pairing 'some'"):
        with_recipe(base, {"pairing": "some"})
    with pytest.raises(ValueError, match="expected a JSON object"):
        DemoConfig(recipe="[1]")
