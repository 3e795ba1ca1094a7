"""The method itself: pure per-pair losses, R -> weight, response log-probs, the method registry."""
