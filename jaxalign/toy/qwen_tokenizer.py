"""Qwen's real vocabulary as a Hugging Face tokenizer, for stand-in checkpoints (test-only).

No Qwen checkpoint can be downloaded on the machines that run the tests, but the ``dashscope``
package (Apache-2.0, on PyPI) ships ``resources/qwen.tiktoken``: the 151,643 byte-level BPE ranks
of Qwen's tokenizer, one ``base64(token) rank`` pair per line. Qwen2, Qwen2.5 and Qwen3 share them.
:func:`build_qwen_tokenizer` turns them into the ``tokenizer.json`` + ``tokenizer_config.json``
pair a Qwen3 hub repository ships, so that stand-in models exercise the real vocabulary: BPE
merges across the prompt/response boundary, V = 151,936 logits, Qwen3's added tokens and its full
chat template.

From ranks to merges. tiktoken encodes a piece by repeatedly merging the adjacent pair whose
concatenation has the lowest rank. A Hugging Face BPE needs instead one merge rule per multi-byte
token, ordered by rank. The rule of the token of rank r is found by replaying tiktoken's BPE on
the token's own bytes with only the ranks below r allowed: that must end in exactly two parts,
and those are the rule. (Picking the two-way split whose parts have the lowest ranks instead gives
a different rule for 9,151 of Qwen's tokens, and 14,126 tokens' own text then encodes differently.)
tests/models/test_qwen_tokenizer.py checks the result against tiktoken itself and against token
ids published for Qwen2 and Qwen3.
"""

from __future__ import annotations

import base64
import importlib.util
import json
from pathlib import Path
from typing import Optional

from jaxalign.errors import TokenizerError

QWEN_BPE_TOKENS = 151_643
"""Regular (BPE) tokens, ids 0..151642: 256 single bytes and 151,387 merges."""

QWEN3_VOCAB_SIZE = 151_936
"""Rows of Qwen3's embedding and LM head (config.json ``vocab_size``); ids past the added tokens are padding."""

# The pre-tokenizer split of Qwen's tokenizer (dashscope's qwen_tokenizer.py, Qwen's tokenizer.json).
PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Qwen3's added tokens (tokenizer_config.json ``added_tokens_decoder``): id, text, special.
# The <tool_call>, FIM, <tool_response> and <think> tokens are added but not special, so
# ``skip_special_tokens`` keeps them.
QWEN3_ADDED_TOKENS: tuple[tuple[int, str, bool], ...] = tuple(
    (QWEN_BPE_TOKENS + i, text, i < 14)
    for i, text in enumerate((
        "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
        "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
        "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
        "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
        "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>",
        "<think>", "</think>",
    ))
)

# Qwen3's chat template, byte for byte as the Qwen3 hub repositories ship it (Qwen3-0.6B ... 32B;
# not the 2507 Instruct/Thinking variants). Its generation prompt is "<|im_start|>assistant\n",
# plus an empty "<think>\n\n</think>\n\n" block when enable_thinking is false.
QWEN3_HUB_CHAT_TEMPLATE = (
    "{%- if tools %}\n"
    "    {{- '<|im_start|>system\\n' }}\n"
    "    {%- if messages[0].role == 'system' %}\n"
    "        {{- messages[0].content + '\\n\\n' }}\n"
    "    {%- endif %}\n"
    "    {{- \"# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n"
    "    {%- for tool in tools %}\n"
    "        {{- \"\\n\" }}\n"
    "        {{- tool | tojson }}\n"
    "    {%- endfor %}\n"
    "    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, "
    "\\\"arguments\\\": <args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n"
    "{%- else %}\n"
    "    {%- if messages[0].role == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endif %}\n"
    "{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}\n"
    "{%- for message in messages[::-1] %}\n"
    "    {%- set index = (messages|length - 1) - loop.index0 %}\n"
    "    {%- if ns.multi_step_tool and message.role == \"user\" and message.content is string and "
    "not(message.content.startswith('<tool_response>') and "
    "message.content.endswith('</tool_response>')) %}\n"
    "        {%- set ns.multi_step_tool = false %}\n"
    "        {%- set ns.last_query_index = index %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- for message in messages %}\n"
    "    {%- if message.content is string %}\n"
    "        {%- set content = message.content %}\n"
    "    {%- else %}\n"
    "        {%- set content = '' %}\n"
    "    {%- endif %}\n"
    "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>' + '\\n' }}\n"
    "    {%- elif message.role == \"assistant\" %}\n"
    "        {%- set reasoning_content = '' %}\n"
    "        {%- if message.reasoning_content is string %}\n"
    "            {%- set reasoning_content = message.reasoning_content %}\n"
    "        {%- else %}\n"
    "            {%- if '</think>' in content %}\n"
    "                {%- set reasoning_content = "
    "content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}\n"
    "                {%- set content = content.split('</think>')[-1].lstrip('\\n') %}\n"
    "            {%- endif %}\n"
    "        {%- endif %}\n"
    "        {%- if loop.index0 > ns.last_query_index %}\n"
    "            {%- if loop.last or (not loop.last and reasoning_content) %}\n"
    "                {{- '<|im_start|>' + message.role + '\\n<think>\\n' + "
    "reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}\n"
    "            {%- else %}\n"
    "                {{- '<|im_start|>' + message.role + '\\n' + content }}\n"
    "            {%- endif %}\n"
    "        {%- else %}\n"
    "            {{- '<|im_start|>' + message.role + '\\n' + content }}\n"
    "        {%- endif %}\n"
    "        {%- if message.tool_calls %}\n"
    "            {%- for tool_call in message.tool_calls %}\n"
    "                {%- if (loop.first and content) or (not loop.first) %}\n"
    "                    {{- '\\n' }}\n"
    "                {%- endif %}\n"
    "                {%- if tool_call.function %}\n"
    "                    {%- set tool_call = tool_call.function %}\n"
    "                {%- endif %}\n"
    "                {{- '<tool_call>\\n{\"name\": \"' }}\n"
    "                {{- tool_call.name }}\n"
    "                {{- '\", \"arguments\": ' }}\n"
    "                {%- if tool_call.arguments is string %}\n"
    "                    {{- tool_call.arguments }}\n"
    "                {%- else %}\n"
    "                    {{- tool_call.arguments | tojson }}\n"
    "                {%- endif %}\n"
    "                {{- '}\\n</tool_call>' }}\n"
    "            {%- endfor %}\n"
    "        {%- endif %}\n"
    "        {{- '<|im_end|>\\n' }}\n"
    "    {%- elif message.role == \"tool\" %}\n"
    "        {%- if loop.first or (messages[loop.index0 - 1].role != \"tool\") %}\n"
    "            {{- '<|im_start|>user' }}\n"
    "        {%- endif %}\n"
    "        {{- '\\n<tool_response>\\n' }}\n"
    "        {{- content }}\n"
    "        {{- '\\n</tool_response>' }}\n"
    "        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n"
    "            {{- '<|im_end|>\\n' }}\n"
    "        {%- endif %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "    {%- if enable_thinking is defined and enable_thinking is false %}\n"
    "        {{- '<think>\\n\\n</think>\\n\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endif %}"
)

_INSTALL_HINT = "pip install dashscope (or the test extras: pip install -e '.[test]')"


def qwen_ranks_file() -> Path:
    """The path of ``qwen.tiktoken`` inside the installed ``dashscope`` package (not imported)."""
    spec = importlib.util.find_spec("dashscope")
    if spec is None or not spec.submodule_search_locations:
        raise TokenizerError(
            "Qwen's BPE ranks come from the dashscope package, which is not installed: " + _INSTALL_HINT
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise TokenizerError(f"{path} is missing from the installed dashscope; reinstall it: {_INSTALL_HINT}")
    return path


def load_ranks(path: str | Path) -> dict[bytes, int]:
    """Reads a tiktoken ranks file; the ranks must be exactly 0..N-1 and include all 256 bytes."""
    ranks: dict[bytes, int] = {}
    for number, line in enumerate(Path(path).read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            token_b64, rank = line.split()
            ranks[base64.b64decode(token_b64, validate=True)] = int(rank)
        except ValueError as err:
            raise TokenizerError(
                f"{path}:{number}: expected 'base64(token) rank', got {line[:60]!r} ({err})"
            ) from err
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise TokenizerError(f"{path}: ranks must be 0..{len(ranks) - 1}, each once (duplicate token or rank?)")
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise TokenizerError(f"{path}: single-byte tokens {missing[:8]} are missing; not a byte-level BPE")
    return ranks


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map used by byte-level BPE vocabularies.

    Printable Latin-1 bytes map to themselves; the other 68 (controls, space, 0x7F-0xA0, 0xAD)
    map, in byte order, to U+0100, U+0101, ... (so b" " -> "Ġ", b"\\n" -> "Ċ").
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    mapping = {b: chr(b) for b in printable}
    for n, b in enumerate(b for b in range(256) if b not in mapping):
        mapping[b] = chr(256 + n)
    return mapping


def merges_from_ranks(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """One merge rule per multi-byte token, in rank order; see the module docstring."""
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) == 1:
            continue
        parts = [token[i:i + 1] for i in range(len(token))]
        while len(parts) > 2:
            best, best_rank = -1, rank
            for i in range(len(parts) - 1):
                pair_rank = ranks.get(parts[i] + parts[i + 1])
                if pair_rank is not None and pair_rank < best_rank:
                    best, best_rank = i, pair_rank
            if best < 0:
                break
            parts[best:best + 2] = [parts[best] + parts[best + 1]]
        if len(parts) != 2:
            raise TokenizerError(
                f"token {token!r} (rank {rank}) cannot be built from lower-ranked tokens; the ranks "
                "file is not a BPE merge list"
            )
        merges.append((parts[0], parts[1]))
    return merges


def byte_level_bpe(ranks: dict[bytes, int]):
    """A ``tokenizers.Tokenizer`` with Qwen's pipeline (NFC, regex split, byte-level BPE), no added tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    to_char = bytes_to_unicode()

    def spell(token: bytes) -> str:
        return "".join(to_char[b] for b in token)

    vocab = {spell(token): rank for token, rank in ranks.items()}
    merges = [(spell(a), spell(b)) for a, b in merges_from_ranks(ranks)]
    core = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    core.normalizer = normalizers.NFC()
    core.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    core.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    core.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    return core


def qwen_bpe_tokenizer(ranks: dict[bytes, int]):
    """:func:`byte_level_bpe` plus Qwen3's added tokens at ids 151643..151668."""
    from tokenizers import AddedToken

    core = byte_level_bpe(ranks)
    for token_id, text, special in QWEN3_ADDED_TOKENS:  # one by one: ids follow the call order
        added = AddedToken(text, special=special, normalized=False)
        (core.add_special_tokens if special else core.add_tokens)([added])
        if core.token_to_id(text) != token_id:
            raise TokenizerError(f"{text} got id {core.token_to_id(text)}, expected {token_id}")
    return core


def qwen3_tokenizer_config() -> dict:
    """tokenizer_config.json as Qwen3's hub repositories write it (Qwen2Tokenizer class)."""
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(token_id): {"content": text, "lstrip": False, "normalized": False, "rstrip": False,
                            "single_word": False, "special": special}
            for token_id, text, special in QWEN3_ADDED_TOKENS
        },
        "additional_special_tokens": [text for _, text, special in QWEN3_ADDED_TOKENS[1:] if special],
        "bos_token": None,
        "chat_template": QWEN3_HUB_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


def build_qwen_tokenizer(out_dir: str | Path, ranks_file: Optional[str | Path] = None) -> Path:
    """Writes Qwen3's tokenizer (tokenizer.json, tokenizer_config.json) to ``out_dir``; returns it.

    ``ranks_file`` defaults to dashscope's ``qwen.tiktoken``. Takes a few seconds (151K merges).
    The directory loads with ``jaxalign.models.load_tokenizer`` and ``AutoTokenizer``. A model
    config beside it should say ``vocab_size`` = :data:`QWEN3_VOCAB_SIZE`.
    """
    ranks_path = Path(ranks_file) if ranks_file is not None else qwen_ranks_file()
    ranks = load_ranks(ranks_path)
    if len(ranks) != QWEN_BPE_TOKENS:
        raise TokenizerError(
            f"{ranks_path}: {len(ranks)} ranks, but Qwen's BPE has {QWEN_BPE_TOKENS}; the added "
            "tokens' ids would be wrong"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    qwen_bpe_tokenizer(ranks).save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps(qwen3_tokenizer_config(), indent=2, ensure_ascii=False))
    return out
