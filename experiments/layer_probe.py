"""Which layer of SmolLM2 reads the demo's gold reward best? A linear probe per layer, on validation pairs.

    PYTHONPATH=src python experiments/layer_probe.py --data runs/val/data

`--data` is the data folder of `rdo demo --validation --stop_after data`: its noisy training pairs
(scorer_train.jsonl: the first 144 training prompts, every pair of their 4 answers) fit the probe,
its validation pairs (heldout_true.jsonl: the last 48 training prompts, ordered by the gold reward)
score it; the held-out prompts are not read. Each answer is rendered with the chat template after
its prompt; its features at every layer are the mean of its tokens' hidden states (bf16 autocast).
Per layer, a logistic regression on the difference of the two answers' standardised features
(both orders, no intercept, L2 penalty `--l2` on the mean loss), fitted by L-BFGS; printed: the
share of validation pairs it orders as the gold reward does. Used to choose `--backbone_layers`
for the demo's scorers (docs/results.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def answer_features(model, tok, answers: list[tuple[str, str]], batch: int = 16) -> dict:
    """(prompt, answer) -> (layers + 1, hidden) mean hidden states over the answer's tokens."""
    feats = {}
    for i in range(0, len(answers), batch):
        chunk = answers[i : i + batch]
        ids, spans = [], []
        for prompt, answer in chunk:
            turn = [{"role": "user", "content": prompt}]
            head = tok(tok.apply_chat_template(turn, add_generation_prompt=True, tokenize=False), add_special_tokens=False).input_ids
            full = tok(tok.apply_chat_template(turn + [{"role": "assistant", "content": answer}], tokenize=False),
                       add_special_tokens=False).input_ids
            ids.append(full)
            spans.append((len(head), len(full)))
        width = max(map(len, ids))
        x = torch.full((len(ids), width), tok.pad_token_id or 0)
        mask = torch.zeros_like(x)
        for j, s in enumerate(ids):
            x[j, : len(s)], mask[j, : len(s)] = torch.tensor(s), 1
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            states = model(input_ids=x, attention_mask=mask, output_hidden_states=True).hidden_states
        for j, (a, b) in enumerate(spans):
            feats[chunk[j]] = torch.stack([h[j, a:b].float().mean(0) for h in states])
    return feats


def differences(pairs: list[dict], feats: dict) -> torch.Tensor:
    """(pairs, layers + 1, hidden): chosen's features minus rejected's."""
    key = lambda r, k: (r["prompt"][0]["content"], r[k][0]["content"])  # noqa: E731
    return torch.stack([feats[key(r, "chosen")] - feats[key(r, "rejected")] for r in pairs])


def fit_probe(x: torch.Tensor, l2: float) -> torch.Tensor:
    """Weights w (on the raw features) of P(chosen preferred) = σ(w·x), fitted on both orders."""
    scale = x.std(0) + 1e-6
    z = x / scale
    z, y = torch.cat([z, -z]), torch.cat([torch.ones(len(x)), torch.zeros(len(x))])
    w = torch.zeros(x.shape[1], requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ w, y) + l2 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach() / scale


def main(argv: list[str] | None = None) -> int:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rdo.demo.smollm import smollm2_dir

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="data folder of `rdo demo --validation --stop_after data`")
    ap.add_argument("--l2", type=float, nargs="+", default=[0.01, 0.1, 1.0], help="L2 penalties to report")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    train, valid = rows(args.data / "scorer_train.jsonl"), rows(args.data / "heldout_true.jsonl")
    model_dir = smollm2_dir()
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    answers = list(dict.fromkeys((r["prompt"][0]["content"], r[k][0]["content"]) for r in train + valid for k in ("chosen", "rejected")))
    feats = answer_features(model, tok, answers)
    x_train, x_valid = differences(train, feats), differences(valid, feats)
    print(f"{len(train)} training pairs, {len(valid)} validation pairs; validation accuracy per layer (0 = embeddings):")
    for l2 in args.l2:
        accs = [float(((x_valid[:, layer] @ fit_probe(x_train[:, layer], l2)) > 0).float().mean()) for layer in range(x_train.shape[1])]
        print(f"l2 {l2:g}: " + " ".join(f"{layer}:{a:.3f}" for layer, a in enumerate(accs)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
