"""``python -m jaxalign.aggregate DIR [DIR ...]``: merge the shards of every run under DIR.

A sharded run merges itself when its last shard finishes. Use this when that job died, or to
check a whole sweep directory: it lists every run and what is missing, and exits 1 if anything is.
"""

from __future__ import annotations

import sys
from pathlib import Path

from jaxalign.errors import JaxalignError
from jaxalign.rundir import merge  # noqa: F401  (re-exported)


def run_dirs(root: Path) -> list[Path]:
    """Every directory at or under root that holds shard records."""
    return sorted({p.parent.parent for p in root.glob("**/shards/*-of-*.json")})


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    failed = False
    for root in map(Path, argv):
        found = run_dirs(root)
        if not found:
            print(f"{root}: no sharded runs found", file=sys.stderr)
            failed = True
        for run_dir in found:
            try:
                totals = merge(run_dir)["record"]["totals"]
                print(f"{run_dir}: merged, {totals['questions']} questions ({totals['skipped']} skipped), "
                      f"{totals['rollouts']} rollouts")
            except JaxalignError as err:
                print(f"incomplete: {err}", file=sys.stderr)
                failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
