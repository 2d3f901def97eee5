"""python -m jaxalign.report RUN_OR_SWEEP_DIR ...: rebuild reports, merging shards (jaxalign.aggregate)."""

import sys

from jaxalign.aggregate import main

sys.exit(main(sys.argv[1:]))
