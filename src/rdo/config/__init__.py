"""One config dataclass per command, grouped by family; each field's `help` is its one-line doc and its CLI help.

Training commands extend `transformers.TrainingArguments`, so every Trainer option (learning rate, schedulers,
DeepSpeed/FSDP, checkpointing, logging) is available under the name users know. The option mixins that several
commands share live in `options.py`, so each shared field has one home; a field that names a file, folder, hub
id or module declares its content kind there too (`arg(..., content=...)`, see rdo.utils.content).
"""

from rdo.config.evaluate import (
    EvalAccuracyConfig, EvalJudgeConfig, EvalRewardConfig, GenerateConfig, HumanExportConfig, HumanTallyConfig,
)
from rdo.config.options import *  # noqa: F403 (the mixins and constants, as rdo.config.X)
from rdo.config.pipeline import DemoConfig, PrepareConfig, ReportConfig, RunConfig
from rdo.config.score import ScoreConfig, TrainDiffConfig, TrainRMConfig
from rdo.config.train import AlignConfig
