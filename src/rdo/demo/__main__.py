"""`python -m rdo.demo [options]` is `rdo demo [options]` (see rdo.demo.pipeline)."""

import sys

from rdo.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
