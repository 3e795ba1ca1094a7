"""`python -m rdo <command>` is `rdo <command>`."""

from rdo.cli import main

main()
