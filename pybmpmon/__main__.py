"""``python -m pybmpmon``: the same as the ``pybmpmon`` console script."""

import sys

from pybmpmon.cli import main

sys.exit(main())
