"""``python -m poller``: the same command line as the ``poller`` console script."""

import sys

from poller.cli import main

if __name__ == "__main__":
    sys.exit(main())
