"""The embedded default run (`rdo demo`): SmolLM2-135M-Instruct (shipped offline) on a sentiment task."""


def demo(cfg) -> dict:
    """`rdo demo`: the stages of rdo.demo.pipeline; returns the report written to <output_dir>/report.json."""
    from rdo.demo.pipeline import run_demo

    return run_demo(cfg)
