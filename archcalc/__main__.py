"""``python -m archcalc``: the command line."""

from archcalc.cli import main

main()
