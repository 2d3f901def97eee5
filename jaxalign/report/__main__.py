"""python -m jaxalign.report RUN_DIR: rebuild the report from result files."""

import sys

from jaxalign.report import write_report

if len(sys.argv) != 2:
    sys.exit("usage: python -m jaxalign.report RUN_DIR")
print(write_report(sys.argv[1]))
