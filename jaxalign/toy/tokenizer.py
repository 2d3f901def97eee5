"""A character-level tokenizer in Hugging Face format, with Qwen3's special tokens and chat template.

It saves ``tokenizer.json`` + ``tokenizer_config.json`` and loads back through ``AutoTokenizer``,
the same code path as real Qwen3, so the toy models exercise the real prompt rendering.
"""

from __future__ import annotations

import string
from pathlib import Path

from jaxalign.models.tokenizer import QWEN3_CHAT_TEMPLATE

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")
DEFAULT_ALPHABET = string.digits + string.ascii_letters + string.punctuation + " \n"


def build_char_tokenizer(out_dir: str | Path, alphabet: str = DEFAULT_ALPHABET):
    """Writes a char-level tokenizer to ``out_dir`` and returns it (a PreTrainedTokenizerFast).

    Ids: the special tokens first (0..4, ``<|endoftext|>`` = 0 is also the pad), then ``alphabet``
    in order. Characters outside the alphabet are an encoding error, never silently dropped.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if len(set(alphabet)) != len(alphabet):
        raise ValueError("alphabet has repeated characters")
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    vocab.update({ch: len(SPECIAL_TOKENS) + i for i, ch in enumerate(alphabet)})
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|endoftext|>"))
    # [\s\S], not ".": "." skips newlines, and "\n\n" would become one unknown piece
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.add_special_tokens(list(SPECIAL_TOKENS[:3]))
    core.add_tokens(list(SPECIAL_TOKENS[3:]))  # as in Qwen3: <think> tags are added, not special
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = QWEN3_CHAT_TEMPLATE
    tokenizer.save_pretrained(str(out_dir))
    return tokenizer
