"""Reading the final answer out of a (thinking-mode) response.

Rules shared by every real task's grader:

- Thinking is ignored. Each ``<think>…</think>`` block is dropped; text before a ``</think>`` that
  has no opening tag is thinking whose ``<think>`` was in the prompt, and is dropped too.
- A response that ends inside its thinking (a ``<think>`` never closed: the length limit hit) has
  no final text and is graded wrong, whatever it says.
- In the final text an answer is a value after the word "answer" ("Answer: B", "**Answer:** B",
  "the answer is B", "ANSWER = (B)") or the content of a ``\\boxed{}``. The last valid one counts.

Everything is linear in the response length: graders run on every rollout, and responses reach
~30K tokens.
"""

from __future__ import annotations

import re
from typing import Optional

_TAG = re.compile(r"</?think>")
# "answer" (any case) as a word, an optional "is", then decoration: spaces, markdown, ':' '=' '$' '(' '[' '{'.
_MARKER = r"(?i:\banswer\b)(?:\s+(?i:is)\b)?[\s*_:=$(\[{]*"
_BOXED = re.compile(r"\\boxed\s*\{((?:[^{}]|\{[^{}]*\})*)\}")
_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mathbf)\s*\{(.*)\}", re.S)


def final_text(response: str) -> Optional[str]:
    """``response`` without its thinking, or None when it ends inside an unclosed ``<think>``."""
    parts: list[str] = []
    pos, inside = 0, False
    for tag in _TAG.finditer(response):
        if tag.group() == "<think>":
            if not inside:
                parts.append(response[pos:tag.start()])
                inside = True
        elif inside:
            inside = False
        else:  # a close without an open: everything so far was thinking opened by the prompt
            parts = []
        if tag.group() == "</think>":
            pos = tag.end()
    if inside:
        return None
    parts.append(response[pos:])
    return "".join(parts)


def _unwrap(boxed: str) -> str:
    """``\\boxed{}`` content without math-mode and text wrappers: ' $\\text{(B)}$ ' -> 'B'."""
    text = boxed.strip().strip("$").strip()
    wrapped = _WRAPPER.fullmatch(text)
    if wrapped:
        text = wrapped.group(1).strip()
    return text.strip("().").strip()


class AnswerPattern:
    """Finds the last answer whose value matches ``value`` (a regex with no capture groups)."""

    def __init__(self, value: str):
        self._marked = re.compile(f"{_MARKER}({value})")
        self._whole = re.compile(value)

    def last(self, response: str) -> Optional[str]:
        """The last answer value in ``response``'s final text (as written), or None."""
        text = final_text(response)
        if text is None:
            return None
        best, best_at = None, -1
        for found in self._marked.finditer(text):
            best, best_at = found.group(1), found.start(1)
        for found in _BOXED.finditer(text):
            value = _unwrap(found.group(1))
            if found.start() > best_at and self._whole.fullmatch(value):
                best, best_at = value, found.start()
        return best
