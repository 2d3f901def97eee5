"""Shared benchmark plumbing: argument parsing, timing, and the one-JSON-line result convention."""

import argparse
import json
import platform

import jax

from jaxalign.calibrate import best_time  # noqa: F401  (the benchmarks' timer)


def parser(description: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--quick", action="store_true", help="a smaller run that finishes in under a minute")
    return ap


def report(name: str, figures: dict) -> None:
    """Prints the benchmark's result as its last line: one JSON object."""
    figures = {"bench": name, "machine": platform.node(), "cpu_count": __import__("os").cpu_count(),
               "jax": jax.__version__, "backend": jax.default_backend(), **figures}
    print(json.dumps(figures))
