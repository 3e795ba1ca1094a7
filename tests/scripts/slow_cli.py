"""`python -m rdo.cli ...`, with every training step slowed by $RDO_TEST_STEP_SLEEP seconds.

For the kill tests: the slowdown only gives the parent time to see a checkpoint folder appear and
SIGKILL this process mid-run; nothing here tells the parent anything (it polls the output folder).
"""

import os
import sys
import time

from rdo.cli import main
from rdo.train.trainer import SafeTrainer

_step = SafeTrainer.training_step
_sleep = float(os.environ.get("RDO_TEST_STEP_SLEEP", "0.3"))


def slow_step(self, *args, **kwargs):
    time.sleep(_sleep)
    return _step(self, *args, **kwargs)


SafeTrainer.training_step = slow_step

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
