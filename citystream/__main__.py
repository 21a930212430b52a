"""``python -m citystream``."""

from citystream.cli import main

main()
