"""Open a report page in headless Chromium: a screenshot, or the JS errors it raised.

``python -m jaxalign.report.screenshot PAGE.html OUT.png [--node I] [--size 1200,800]``

Chromium is optional (``apt-get install -y chromium``); :func:`find_chromium` returns None when it
is absent. Errors are collected two ways: the page's own hook writes uncaught errors into its DOM
(``body[data-js-errors]``, read from ``--dump-dom``), and Chromium's console log on stderr is
scanned for uncaught errors and failed loads.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CONSOLE_ERROR = re.compile(r"(Uncaught|ERR_FILE_NOT_FOUND|Failed to load|SyntaxError|TypeError|ReferenceError)")


def find_chromium() -> Optional[str]:
    for name in NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _run(page: Path, fragment: str, extra: list[str], timeout: float) -> subprocess.CompletedProcess:
    binary = find_chromium()
    if binary is None:
        raise FileNotFoundError("chromium is not installed (apt-get install -y chromium)")
    with tempfile.TemporaryDirectory(prefix="jaxalign-chromium-") as profile:
        command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
                   f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *extra,
                   Path(page).resolve().as_uri() + fragment]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "LANG": "C.UTF-8"})


def page_errors(page: str | Path, fragment: str = "#selftest", timeout: float = 60.0) -> tuple[list[str], str]:
    """Loads ``page`` (by default in self-test mode) and returns (errors, the rendered DOM)."""
    done = _run(Path(page), fragment, ["--dump-dom", "--virtual-time-budget=2000"], timeout)
    dom = done.stdout
    errors = [line.strip() for line in done.stderr.splitlines()
              if "CONSOLE" in line and CONSOLE_ERROR.search(line)]
    match = re.search(r'data-js-errors="(\d+)"', dom)
    if match is None:
        errors.append("the page's error hook did not run (no data-js-errors attribute in the DOM)")
    elif match.group(1) != "0":
        box = re.search(r'<pre id="js-errors"[^>]*>(.*?)</pre>', dom, re.S)
        errors.append(f"{match.group(1)} JS errors: {box.group(1).strip() if box else '?'}")
    if 'data-ready="1"' not in dom:
        errors.append("the page's script did not finish (body[data-ready] is not 1)")
    return errors, dom


def screenshot(page: str | Path, out: str | Path, *, size: tuple[int, int] = (1200, 800), fragment: str = "",
               timeout: float = 60.0) -> Path:
    """Writes a PNG of ``page`` at ``size`` (width, height) to ``out``."""
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    done = _run(Path(page), fragment, [f"--screenshot={out}", f"--window-size={size[0]},{size[1]}",
                                       "--virtual-time-budget=2000"], timeout)
    if not out.is_file():
        raise RuntimeError(f"chromium wrote no screenshot (exit {done.returncode}): {done.stderr[-800:]}")
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxalign.report.screenshot", description=__doc__.split("\n")[0])
    parser.add_argument("page", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--node", type=int, default=None, help="open this decision node's tooltip")
    parser.add_argument("--size", default="1200,800", help="window WIDTH,HEIGHT in pixels")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.split(","))
    errors, _ = page_errors(args.page)
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    fragment = "" if args.node is None else f"#node-{args.node}"
    print(screenshot(args.page, args.out, size=(width, height), fragment=fragment))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
