"""Tokenizer loading and Qwen3 chat rendering, through AutoTokenizer like real Qwen3."""

import json

import pytest

from jaxalign.errors import TokenizerError
from jaxalign.models import encode_chat, load_tokenizer, render_chat
from jaxalign.models.tokenizer import check_same_tokenizer
from jaxalign.toy.tokenizer import build_char_tokenizer


@pytest.fixture
def tokenizer_dir(tmp_path):
    build_char_tokenizer(tmp_path / "tok")
    return tmp_path / "tok"


def test_thinking_mode_is_the_default(tokenizer_dir):
    tok = load_tokenizer(tokenizer_dir)
    assert render_chat(tok, "2+3?") == "<|im_start|>user\n2+3?<|im_end|>\n<|im_start|>assistant\n"
    assert render_chat(tok, "2+3?", enable_thinking=False).endswith(
        "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
    assert render_chat(tok, "q", system="be brief").startswith("<|im_start|>system\nbe brief<|im_end|>\n")


def test_special_tokens_are_single_ids_and_round_trip(tokenizer_dir):
    tok = load_tokenizer(tokenizer_dir)
    ids = encode_chat(tok, "Answer: 42")
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>")
    assert tok.decode(ids) == render_chat(tok, "Answer: 42")
    think = tok("<think>\nx</think>", add_special_tokens=False)["input_ids"]
    assert think[0] == tok.convert_tokens_to_ids("<think>") and len(think) == 4
    assert tok.eos_token == "<|im_end|>"


def test_missing_chat_template_is_an_error(tokenizer_dir):
    (tokenizer_dir / "chat_template.jinja").unlink(missing_ok=True)
    cfg_path = tokenizer_dir / "tokenizer_config.json"
    raw = json.loads(cfg_path.read_text())
    raw.pop("chat_template", None)
    cfg_path.write_text(json.dumps(raw))
    with pytest.raises(TokenizerError, match="no chat_template"):
        load_tokenizer(tokenizer_dir)


def test_missing_tokenizer_directory(tmp_path):
    with pytest.raises(TokenizerError, match="does not exist"):
        load_tokenizer(tmp_path / "absent")


def test_different_vocabularies_are_rejected(tmp_path):
    a = build_char_tokenizer(tmp_path / "a", alphabet="0123456789 ")
    b = build_char_tokenizer(tmp_path / "b", alphabet="0123456789+ ")
    check_same_tokenizer(a, load_tokenizer(tmp_path / "a"))
    with pytest.raises(TokenizerError, match="Cross-tokenizer"):
        check_same_tokenizer(a, b, "student", "Qwen3-8B")


def test_every_character_round_trips_including_repeated_newlines(tokenizer_dir):
    """Regression: the pre-tokenizer's "." skipped newlines, so "\\n\\n" became <|endoftext|>."""
    tok = load_tokenizer(tokenizer_dir)
    text = "</think>\n\nAnswer: 101\n\n\n  x\t"[:-1]
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in ids
    assert tok.decode(ids) == text
    assert ids[1:3] == [tok.convert_tokens_to_ids("\n")] * 2


def test_an_install_without_torch_loads_tokenizers_without_a_torch_notice(tokenizer_dir):
    """The README installs no torch; transformers then announces at import that models are unavailable,
    which is noise for a tool that uses only its tokenizers."""
    import os
    import subprocess
    import sys

    script = ("import sys; sys.modules['torch'] = None\n"  # as if torch were not installed
              "from jaxalign.models import load_tokenizer\n"
              f"print(load_tokenizer({str(tokenizer_dir)!r}).eos_token)")
    env = {k: v for k, v in os.environ.items() if k != "TRANSFORMERS_VERBOSITY"}  # conftest quiets it
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "<|im_end|>"
    assert "PyTorch was not found" not in done.stderr + done.stdout
