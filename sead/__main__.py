"""`python -m sead ...`: the `sead` command, for an environment whose scripts are not on PATH."""

from sead.cli import main

main()
