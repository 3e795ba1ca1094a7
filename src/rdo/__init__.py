"""rdo: Reward Difference Optimization for offline RLHF of Hugging Face causal LMs."""

__version__ = "0.1.0"
