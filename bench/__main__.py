"""``python -m bench``: every benchmark, then the summary (bench/suite.py)."""

import sys

from bench.suite import main

sys.exit(main())
