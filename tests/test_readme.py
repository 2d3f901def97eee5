"""The README's commands, run as written, so that no README line drifts from the code.

Every fenced command block (bash, sh, console, python) in README.md carries a marker on the line
just before its opening fence, and an unmarked one fails ``test_every_command_block_is_marked``:

    <!-- readme-test: run -->                each command is run, in order, in one scratch working
                                             directory, and must exit 0
    <!-- readme-test: compose (REASON) -->   each ``python -m jaxalign.run`` command is composed and
                                             validated like the real entry point, but not run
    <!-- readme-test: skip (REASON) -->      not run; REASON says why and what covers it instead
    <!-- test-command -->                    the test command, which .ci/run runs in a fresh clone

Commands that take minutes (the toy default, the paper budget) are ``compose``, not shrunk with an
extra override: a shrunken command would no longer be the README's command. Commands that need a
cluster, root or a download are ``skip``. Runs read the README's commands with two rewrites only:
a leading ``python`` is this interpreter (sys.executable), and a leading ``launch/`` is the
repository's launch/ folder (the scripts get PYTHON=sys.executable). Relative paths such as
``outputs/...`` land in the scratch directory, so the report command reads the run above it.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from jaxalign import config as C
from tests.test_run import composed

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
COMMAND_LANGUAGES = ("bash", "sh", "shell", "console", "python")
_FENCE = re.compile(r"^```(\w*)\s*$")
_MARKER = re.compile(r"^<!-- readme-test: (?P<kind>\w+)(?: \((?P<reason>.+)\))? -->$")
TEST_COMMAND = "<!-- test-command -->"
RUN_TIMEOUT_S = 300


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence
    language: str
    kind: str | None  # run | compose | skip | test-command; None: unmarked
    reason: str | None
    commands: tuple[str, ...]  # one per command: continuation lines joined, blank and comment lines dropped


def _commands(lines: list[str]) -> tuple[str, ...]:
    out, pending = [], ""
    for raw in lines:
        text = pending + raw.strip()
        if text.endswith("\\"):
            pending = text[:-1].rstrip() + " "
            continue
        pending = ""
        if text and not text.startswith("#"):
            out.append(text)
    return tuple(out)


def parse_blocks(text: str) -> list[Block]:
    """The fenced code blocks of a Markdown text, each with the marker on the line before its fence."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
        if end is None:
            raise AssertionError(f"README.md:{i + 1}: a code fence that is never closed")
        before = lines[i - 1].strip() if i else ""
        marker = _MARKER.match(before)
        kind = marker["kind"] if marker else ("test-command" if before == TEST_COMMAND else None)
        blocks.append(Block(i + 1, fence[1], kind, marker["reason"] if marker else None, _commands(lines[i + 1:end])))
        i = end + 1
    return blocks


def marking_problems(blocks: list[Block]) -> list[str]:
    problems = []
    for b in blocks:
        where = f"README.md:{b.line}"
        if b.language not in COMMAND_LANGUAGES:
            continue
        if b.kind is None:
            problems.append(f"{where}: a ```{b.language} block without a marker. Put <!-- readme-test: run --> on the "
                            "line before its fence, or compose (REASON) / skip (REASON); see tests/test_readme.py")
        elif b.kind not in ("run", "compose", "skip", "test-command"):
            problems.append(f"{where}: unknown marker kind {b.kind!r}; use run, compose (REASON) or skip (REASON)")
        elif b.kind in ("compose", "skip") and not b.reason:
            problems.append(f"{where}: a {b.kind} marker needs a reason: <!-- readme-test: {b.kind} (why) -->")
        elif b.kind in ("run", "compose") and b.language == "python":
            problems.append(f"{where}: only shell blocks can be run or composed; mark a python block skip (REASON)")
    return problems


def as_run_command(command: str) -> str:
    """The README command with this interpreter for ``python`` and the repository's launch/ folder."""
    command = re.sub(r"^python(?=\s)", shlex.quote(sys.executable), command)
    return re.sub(r"^launch/", shlex.quote(str(ROOT / "launch")) + "/", command)


def run_overrides(command: str) -> list[str]:
    """The Hydra overrides of a ``python -m jaxalign.run ...`` command (shell comments dropped)."""
    words = shlex.split(command, comments=True)
    if words[:3] != ["python", "-m", "jaxalign.run"] or "-m" in words[3:] or "--multirun" in words[3:]:
        raise AssertionError(f"a compose block holds single `python -m jaxalign.run ...` commands, not {command!r}")
    return words[3:]


BLOCKS = parse_blocks(README.read_text())
RUN = [c for b in BLOCKS if b.kind == "run" for c in b.commands]
COMPOSE = [c for b in BLOCKS if b.kind == "compose" for c in b.commands]


# --- the checker itself, on a README written here --------------------------------------------

SAMPLE = """\
<!-- readme-test: run -->
```bash
python -m jaxalign.run +experiment=exact \\
    seed=1   # a comment
# a comment line

launch/sweep.sh --dry-run -- seed=0,1
```

```bash
launch/sweep.sh --slurm gpu
```

<!-- readme-test: skip -->
```bash
sudo true
```

<!-- readme-test: compose (slow) -->
```python
print(1)
```

```
config.json   plain text, not a command block
```
"""


def test_checker_joins_continuations_and_finds_unmarked_blocks_and_missing_reasons():
    blocks = parse_blocks(SAMPLE)
    assert [(b.line, b.language, b.kind) for b in blocks] == [
        (2, "bash", "run"), (10, "bash", None), (15, "bash", "skip"), (20, "python", "compose"), (24, "", None)]
    assert blocks[0].commands == ("python -m jaxalign.run +experiment=exact seed=1   # a comment",
                                  "launch/sweep.sh --dry-run -- seed=0,1")
    problems = marking_problems(blocks)
    assert [p.split(":")[1] for p in problems] == ["10", "15", "20"], problems
    assert "without a marker" in problems[0] and "needs a reason" in problems[1] and "python" in problems[2]


def test_checker_rewrites_only_a_leading_python_and_launch():
    assert as_run_command("python -m jaxalign.report outputs/python") == (
        f"{shlex.quote(sys.executable)} -m jaxalign.report outputs/python")
    assert as_run_command("launch/sweep.sh --dry-run") == f"{shlex.quote(str(ROOT / 'launch'))}/sweep.sh --dry-run"
    assert as_run_command("python3 -m venv .venv") == "python3 -m venv .venv"
    assert run_overrides("python -m jaxalign.run budget=paper seed=1  # hours") == ["budget=paper", "seed=1"]
    with pytest.raises(AssertionError, match="compose block"):
        run_overrides("python -m jaxalign.run -m seed=0,1")


# --- the README ---------------------------------------------------------------------------------

def test_every_command_block_is_marked():
    problems = marking_problems(BLOCKS)
    assert not problems, "\n".join(problems)
    assert RUN and COMPOSE, "the README lost its runnable or its composed commands"


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Every run-marked command, in README order, in one scratch working directory."""
    cwd = tmp_path_factory.mktemp("readme")
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHON=sys.executable)
    results = {}
    for command in RUN:
        results[command] = subprocess.run(["bash", "-c", as_run_command(command)], cwd=cwd, env=env,
                                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    return results


@pytest.mark.parametrize("command", RUN)
def test_run_marked_command_succeeds_as_written(ran, command):
    result = ran[command]
    assert result.returncode == 0, f"{command}\nexit {result.returncode}\n{(result.stdout + result.stderr)[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]


@pytest.mark.parametrize("command", COMPOSE)
def test_compose_marked_command_composes_and_validates(command):
    C.validate(C.from_omegaconf(composed(*run_overrides(command))))
