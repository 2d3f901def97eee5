"""``python -m jaxalign.report [--force] DIR [DIR ...]`` (or ``python -m jaxalign.aggregate``): rebuild reports.

DIR is a run directory or a sweep directory holding runs. For every run found, a sharded run's
shards are merged into run.json and its report (the last shard does that by itself; this is for
when its job died); an unsharded run's report is rebuilt from its result files. A sweep directory
also gets DIR/report/, its runs side by side. Exits 1, naming what is missing, when a run's shards
are incomplete or a question's files are missing or do not match their manifest; ``--force`` builds
from the intact questions anyway, and report.md says so at its top.
"""

from __future__ import annotations

import sys
from pathlib import Path

from jaxalign.errors import JaxalignError
from jaxalign.report import write_report, write_sweep_report
from jaxalign.report.load import run_dirs
from jaxalign.rundir import merge


def main(argv: list[str]) -> int:
    force = "--force" in argv
    argv = [a for a in argv if a != "--force"]
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    failed = False
    for root in map(Path, argv):
        found, complete = run_dirs(root), True
        if not found:
            print(f"{root}: no runs found (no questions/ or shards/ below it)", file=sys.stderr)
            failed = True
        for run_dir in found:
            try:
                if (run_dir / "shards").is_dir():
                    totals = merge(run_dir, force=force)["record"]["totals"]
                    print(f"{run_dir}: merged, {totals['questions']} questions ({totals['skipped']} skipped), "
                          f"{totals['rollouts']} rollouts")
                else:
                    write_report(run_dir, force=force)
                    print(f"{run_dir}: report rebuilt" + (" (--force: from the intact questions only)" if force else ""))
            except JaxalignError as err:
                print(f"incomplete: {err}", file=sys.stderr)
                failed, complete = True, False
        if found and complete and root.resolve() not in {d.resolve() for d in found}:
            write_sweep_report(root, force=force)
            print(f"{root}: sweep report of {len(found)} runs in {root / 'report'}")
    if len(argv) == 1 and len(found) == 1 and not failed:
        print((found[0] / "report" / "report.md").read_text())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
