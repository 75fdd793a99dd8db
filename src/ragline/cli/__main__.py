"""`python -m ragline.cli`: the same as the `ragline` console script."""

from ragline.cli import main

main()
