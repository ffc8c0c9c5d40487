"""``python -m include <command>``: see :mod:`include.cli`."""

from include.cli import main

main()
