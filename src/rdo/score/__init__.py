"""Scorers (reward / difference models): their training, frozen-layer cache, `rdo score`, cross-fitting."""
