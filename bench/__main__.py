"""`python -m bench` is `python -m bench.pipeline` (what `make bench` runs)."""

import sys

from bench.pipeline import main

sys.exit(main())
