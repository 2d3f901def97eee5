"""Tokenizer loading and Qwen3 chat rendering.

The tokenizer always comes from the model directory itself, through ``AutoTokenizer``, so the toy
checkpoints and real Qwen3 take the same path. Prompts are rendered with the model's own chat
template in Qwen3 thinking mode (``enable_thinking=True``): the generation prompt ends in
``<|im_start|>assistant\\n`` and the model opens ``<think>`` itself.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

from jaxalign.errors import TokenizerError

# A single-turn subset of Qwen3's template, byte-identical to it for system/user/assistant turns and
# the generation prompt (with and without thinking). Used by the toy tokenizer.
QWEN3_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)


class _NoTorchNotice(logging.Filter):
    """Drops transformers' import-time notice that PyTorch is missing: jaxalign uses only its tokenizers
    and configs, so a user's install without torch is the normal case, not something to warn about."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "PyTorch was not found" not in record.getMessage()


logging.getLogger("transformers").addFilter(_NoTorchNotice())


def load_tokenizer(model_dir: str | os.PathLike):
    """Loads the Hugging Face tokenizer that ships with a model directory; it must have a chat template."""
    from transformers import AutoTokenizer

    path = Path(model_dir)
    if not path.is_dir():
        raise TokenizerError(f"tokenizer directory {path} does not exist")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as err:
        raise TokenizerError(f"{path}: could not load a tokenizer ({err})") from err
    if not getattr(tokenizer, "chat_template", None):
        raise TokenizerError(
            f"{path}: the tokenizer has no chat_template; jaxalign renders prompts with the model's "
            "own template. Add it to tokenizer_config.json (or chat_template.jinja)."
        )
    return tokenizer


def render_chat(tokenizer, user_message: str, *, enable_thinking: bool = True,
                system: Optional[str] = None) -> str:
    """Renders one user turn plus the assistant generation prompt as text."""
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user_message}
    ]
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, enable_thinking=enable_thinking
    )


def encode_chat(tokenizer, user_message: str, *, enable_thinking: bool = True,
                system: Optional[str] = None) -> list[int]:
    """Token ids of :func:`render_chat`'s text (no extra BOS/EOS: the template has them)."""
    text = render_chat(tokenizer, user_message, enable_thinking=enable_thinking, system=system)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def check_same_tokenizer(student, teacher, student_name: str = "student", teacher_name: str = "teacher"):
    """Raises unless the two tokenizers map every token string to the same id."""
    if student.get_vocab() != teacher.get_vocab():
        raise TokenizerError(
            f"{teacher_name}'s tokenizer differs from {student_name}'s; response tokens would not "
            "line up. Cross-tokenizer teachers are not supported: pick a teacher of the same family."
        )
