"""The embedded default run: SmolLM2-135M-Instruct (shipped offline) on a small sentiment task."""
