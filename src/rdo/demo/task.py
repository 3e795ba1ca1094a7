"""The demo task: write positive short texts. Gold reward = VADER sentiment (a real lexicon model, offline)."""

from __future__ import annotations

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
    "a village festival", "a cancelled concert", "a pet rabbit",
]
TEMPLATE = "Write two sentences about {}."


def prompts() -> list[str]:
    return [TEMPLATE.format(s) for s in SUBJECTS]


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


_VADER: Vader | None = None


def vader_reward(prompt: str, response: str) -> float:
    """The gold reward as a `--reward_fn` (rdo eval reward --reward_fn rdo.demo.task:vader_reward): VADER of the response."""
    global _VADER
    if _VADER is None:
        _VADER = Vader()
    return _VADER(response)
