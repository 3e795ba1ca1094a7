"""The demo task: short texts about everyday subjects, where the gold reward is how positive they read.

- prompts: every subject x every template (64 x 4 = 256), split by subject into training and held-out
  prompts, so no held-out subject was seen in training;
- gold reward: VADER's compound sentiment of the response, in [-1, 1] (a real lexicon model, offline);
  the policy and the scorers never see it, only labels drawn from it;
- labels: a Bradley-Terry model of the gold reward with a noise temperature tau,
  P(a preferred to b) = sigmoid((g_a - g_b) / tau), so a known share of the labels is wrong.
"""

from __future__ import annotations

import math
import random
from functools import lru_cache

SUBJECTS = [
    "a rainy Monday morning", "the city bus", "a new smartphone", "a small bakery", "the public library",
    "a long flight", "a mountain hike", "a chess club", "the dentist", "a cooking class", "an old bicycle",
    "the office coffee machine", "a street market", "a jazz concert", "a winter storm", "a science museum",
    "a second-hand bookshop", "a crowded train", "a home-made pizza", "a tax form", "a school reunion",
    "a power outage", "a garden in spring", "a hotel breakfast", "an online course", "a traffic jam",
    "a board game night", "a lost umbrella", "a fishing trip", "a yoga class", "a late delivery",
    "a museum audio guide", "a camping weekend", "a noisy neighbour", "a vegetable soup", "a software update",
    "a football match", "a thunderstorm at night", "a first day at work", "a hospital waiting room",
    "a birthday party", "a broken printer", "a sunrise at the beach", "a language exchange", "a queue at the bank",
    "a village festival", "a cancelled concert", "a pet rabbit", "a parking ticket", "a picnic by the river",
    "a job interview", "a flat tyre", "a piano lesson", "a cold shower", "a farmers' market", "a missed flight",
    "a snowy village", "a group project", "an art gallery", "a leaking roof", "a road trip", "a Monday meeting",
    "a new puppy", "a slow internet connection",
]
TEMPLATES = [
    "Write two sentences about {}.",
    "Describe {} in two sentences.",
    "Write a short review of {}.",
    "Tell a friend about {} in two sentences.",
]
HELD_OUT_EVERY = 4  # every 4th subject is held out: 16 subjects x 4 templates = 64 held-out prompts


def prompt_table() -> list[dict]:
    """Every (subject, template) prompt with its id and split ("train" or "test")."""
    rows = []
    for s, subject in enumerate(SUBJECTS):
        split = "test" if s % HELD_OUT_EVERY == HELD_OUT_EVERY - 1 else "train"
        for t, template in enumerate(TEMPLATES):
            rows.append({"id": f"s{s:02d}t{t}", "subject": subject, "prompt": template.format(subject), "split": split})
    return rows


class Vader:
    """Gold reward: VADER's compound sentiment in [-1, 1]."""

    def __init__(self):
        try:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
        except ImportError as e:
            raise ImportError("the demo's gold reward needs vaderSentiment: pip install 'rdo[demo]'") from e
        self._analyzer = SentimentIntensityAnalyzer()

    def __call__(self, text: str) -> float:
        return float(self._analyzer.polarity_scores(text)["compound"])


@lru_cache(maxsize=1)
def _vader() -> Vader:
    return Vader()


def vader_reward(prompt, response) -> float:
    """The gold reward as `rdo eval reward --reward_fn rdo.demo.task:vader_reward` calls it; the prompt is unused."""
    return _vader()(response if isinstance(response, str) else response[-1]["content"])


def bt_label(g_a: float, g_b: float, tau: float, rng: random.Random) -> bool:
    """Whether a is labelled preferred: drawn from Bradley-Terry, P = sigmoid((g_a - g_b) / tau); tau = 0 is noise-free."""
    if tau == 0:
        return g_a > g_b if g_a != g_b else rng.random() < 0.5
    return rng.random() < 1 / (1 + math.exp(-(g_a - g_b) / tau))


def p_wrong(g_a: float, g_b: float, tau: float) -> float:
    """Probability that the drawn label contradicts the gold order (0.5 for a gold tie)."""
    if g_a == g_b:
        return 0.5
    return 1 / (1 + math.exp(abs(g_a - g_b) / tau)) if tau > 0 else 0.0
