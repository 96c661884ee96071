"""``python -m sdcloud ...``: the same command line as ``sdcloud ...`` (Colab cells use it)."""

import sys

from sdcloud.cli import main

if __name__ == "__main__":
    sys.exit(main())
