"""`--pooling mean`: the head on the mean of the response's final hidden states (a difference model:
y1's mean minus y2's), whatever the padding side, recorded in rdo.json and used by `rdo score`.

The byte tokenizer gives one token per byte (BOS = 1, EOS = 2, pad = 0), so spans are literal.
"""

from __future__ import annotations

import json

import pytest
import torch

from conftest import write_jsonl
from rdo.score.scorers import build_scorer_model, head_scores, pool_weights, use_scorer_pad


def test_pool_weights_by_hand_right_and_left_padding():
    spans = [[(2, 5, 1.0)], [(0, 1, 1.0), (1, 3, -1.0)]]  # a reward row of 5 tokens; a difference row of 3
    right = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    left = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    third = 1 / 3
    torch.testing.assert_close(pool_weights(spans, right), torch.tensor([[0, 0, third, third, third], [1, -0.5, -0.5, 0, 0]]))
    torch.testing.assert_close(pool_weights(spans, left), torch.tensor([[0, 0, third, third, third], [0, 0, 1, -0.5, -0.5]]))
    with pytest.raises(ValueError, match="does not fit a row of 3 tokens"):
        pool_weights([[(1, 4, 1.0)]], torch.tensor([[1, 1, 1, 0]]))


@pytest.fixture
def scorer_model(tiny_model, tokenizer):
    torch.manual_seed(0)
    model = build_scorer_model(str(tiny_model), tokenizer, "float32").eval()
    torch.nn.init.normal_(model.score.weight, std=1.0)  # a head that reads every hidden dimension
    return model


@pytest.mark.parametrize("lora", [False, True])
def test_mean_pooling_is_the_head_on_the_mean_state_whatever_the_padding(scorer_model, lora):
    model = scorer_model
    if lora:
        from rdo.models import add_lora

        model = add_lora(model, 4, 8, 0.0, "all-linear", task_type="SEQ_CLS").eval()
    base = model.get_base_model() if lora else model
    seqs = [[1, 50, 51, 52, 53, 54, 2], [1, 60, 61, 2]]
    spans = [[(3, 7, 1.0)], [(1, 2, 1.0), (2, 4, -1.0)]]  # a response; y1 = [60], y2 = [61, 2]
    with torch.no_grad():
        want = []
        for s, row in zip(seqs, spans):  # each sequence alone, no padding: the head on the signed span means
            h = base.model(input_ids=torch.tensor([s])).last_hidden_state[0]  # (L, H)
            pooled = sum(sign * h[a:b].mean(0) for a, b, sign in row)
            want.append(base.score(pooled).item())
        T = max(map(len, seqs))
        right = torch.tensor([s + [0] * (T - len(s)) for s in seqs])
        left = torch.tensor([[0] * (T - len(s)) + s for s in seqs])
        got = {}
        for side, ids in (("right", right), ("left", left)):
            mask = (torch.arange(T)[None, :] < torch.tensor([[len(s)] for s in seqs])).long()
            mask = mask if side == "right" else mask.flip(1)
            got[side] = head_scores(model, ids, mask, pool_weights(spans, mask)).tolist()
        last = head_scores(model, right, (right != 0).long()).tolist()
    assert got["right"] == pytest.approx(want, abs=1e-4)
    assert got["left"] == pytest.approx(want, abs=1e-4)
    assert all(abs(a - b) > 1e-3 for a, b in zip(last, want))  # the last token alone gives other scores


def _hand_scores(folder, seqs_and_spans):
    """Scores by plain transformers: the saved head on the signed mean of the spans' final hidden states."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    out = []
    with torch.no_grad():
        for s, row in seqs_and_spans:
            h = model.model(input_ids=torch.tensor([s])).last_hidden_state[0]
            out.append(model.score(sum(sign * h[a:b].mean(0) for a, b, sign in row)).item())
    return out


def test_pooling_is_saved_and_reaches_rdo_score(tiny_model, tmp_path):
    from rdo.cli import main
    from rdo.data.tokenize import Truncation
    from rdo.models import load_tokenizer
    from rdo.score.scorers import DifferenceEncoder, PAPER_TEMPLATE, ScorerSpec, load_scorer
    from scorer_helpers import learnable_pairs

    rows = learnable_pairs(8, seed=5)
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    common = ["--model_name_or_path", str(tiny_model), "--dataset_name", str(data), "--report_to", "none",
              "--disable_tqdm", "true", "--per_device_train_batch_size", "4", "--max_steps", "2", "--pooling", "mean",
              "--freeze_backbone", "--cache_frozen", "--head_learning_rate", "1e-2"]
    assert main(["train-rm", *common, "--output_dir", str(tmp_path / "rm")]) == 0
    assert main(["train-diff", *common, "--output_dir", str(tmp_path / "diff"), "--max_length", "128", "--max_prompt_length", "32"]) == 0
    for name in ("rm", "diff"):
        assert json.loads((tmp_path / name / "rdo.json").read_text())["pooling"] == "mean"
        assert ScorerSpec.load(tmp_path / name).pooling == "mean"
        assert load_scorer(str(tmp_path / name), device="cpu").spec.pooling == "mean"
        assert main(["score", "--scorer", str(tmp_path / name), "--dataset_name", str(data),
                     "--output", str(tmp_path / f"{name}.jsonl")]) == 0
    tok = load_tokenizer(str(tmp_path / "rm"))
    ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    scored_rm = [json.loads(line) for line in (tmp_path / "rm.jsonl").read_text().splitlines()]
    for row, got in zip(rows, scored_rm):  # the response's tokens: its bytes and the EOS
        p = [1] + ids(row["prompt"])
        want = _hand_scores(tmp_path / "rm", [(p + ids(y) + [2], [(len(p), len(p) + len(ids(y)) + 1, 1.0)])
                                               for y in (row["chosen"], row["rejected"])])
        assert [got["rdo_score_chosen"], got["rdo_score_rejected"]] == pytest.approx(want, abs=1e-4)

    enc = DifferenceEncoder(tok, PAPER_TEMPLATE, Truncation(128, 32))
    scored_diff = [json.loads(line) for line in (tmp_path / "diff.jsonl").read_text().splitlines()]
    for row, got in zip(rows, scored_diff):
        x, c, r = ids(row["prompt"]), ids(row["chosen"]), ids(row["rejected"])
        (s12, spans12), (s21, spans21) = enc.assemble_pooled(x, c, r), enc.assemble_pooled(x, r, c)
        assert [s12[a:b] for a, b, _ in spans12] == [c, r]  # the spans hold the two responses' tokens
        f12, f21 = _hand_scores(tmp_path / "diff", [(s12, spans12), (s21, spans21)])
        assert got["rdo_reward_diff"] == pytest.approx((f12 - f21) / 2, abs=1e-4)  # symmetrised R


def test_pooling_is_checked(tiny_model):
    from rdo.config import TrainRMConfig

    with pytest.raises(ValueError, match="--pooling 'max'"):
        TrainRMConfig(output_dir="o", model_name_or_path=str(tiny_model), dataset_name="d.jsonl", pooling="max", report_to="none")
