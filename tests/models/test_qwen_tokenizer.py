"""The Qwen-vocabulary tokenizer for stand-in checkpoints (jaxalign.toy.qwen_tokenizer).

Three kinds of ground truth:
- exact hand-derived merges on a small rank table, and tiktoken itself on that table;
- dashscope's own QwenTokenizer (tiktoken over the same ranks and split pattern) on every token's
  text, on concatenations of random tokens and on random character soup;
- token ids that other projects publish for Qwen2/Qwen3 tokenizers (each case names its source).
"""

import hashlib
import importlib.util
import unicodedata

import numpy as np
import pytest

from jaxalign.errors import TokenizerError
from jaxalign.models import encode_chat, load_tokenizer, render_chat
from jaxalign.models.tokenizer import QWEN3_CHAT_TEMPLATE
from jaxalign.toy import qwen_tokenizer as qt

HAS_DASHSCOPE = importlib.util.find_spec("dashscope") is not None
needs_dashscope = pytest.mark.skipif(not HAS_DASHSCOPE, reason="needs dashscope: pip install dashscope")


@pytest.fixture(scope="session")
def qwen_dir(tmp_path_factory):
    """Qwen3's tokenizer files, built once per session (a few seconds)."""
    if not HAS_DASHSCOPE:
        pytest.skip("needs dashscope: pip install dashscope")
    return qt.build_qwen_tokenizer(tmp_path_factory.mktemp("qwen3_tokenizer"))


@pytest.fixture(scope="session")
def qwen(qwen_dir):
    """The tokenizer as jaxalign loads a model's: AutoTokenizer through load_tokenizer."""
    return load_tokenizer(qwen_dir)


@pytest.fixture(scope="session")
def reference():
    """dashscope's Qwen tokenizer: tiktoken over qwen.tiktoken, NFC first, Qwen's split regex."""
    if not HAS_DASHSCOPE:
        pytest.skip("needs dashscope: pip install dashscope")
    from dashscope.tokenizers.qwen_tokenizer import QwenTokenizer

    return QwenTokenizer(str(qt.qwen_ranks_file()))


def ids_of(tok, text):
    return list(tok(text, add_special_tokens=False)["input_ids"])


def plain_ids(reference, texts):
    """Reference ids of ordinary text (special-token strings are not special here)."""
    enc = reference._tokenizer
    return [enc.encode_ordinary(unicodedata.normalize("NFC", t)) for t in texts]


# ---------------------------------------------------------------- ranks -> merges, exact


def tiny_ranks():
    """All 256 bytes, then bc < ab < cd < abc < bcd < abcd."""
    ranks = {bytes([b]): b for b in range(256)}
    for rank, token in enumerate([b"bc", b"ab", b"cd", b"abc", b"bcd", b"abcd"], start=256):
        ranks[token] = rank
    return ranks


def test_merges_replay_bpe_below_the_tokens_rank():
    # By hand: "abcd" with ranks below its own merges b+c first (bc is the lowest pair), then
    # a+bc (abc < bcd), leaving abc+d. Splitting into the lowest-ranked parts would give ab+cd,
    # a rule that BPE can never apply since "bc" is merged before "ab" or "cd".
    assert qt.merges_from_ranks(tiny_ranks()) == [
        (b"b", b"c"), (b"a", b"b"), (b"c", b"d"), (b"a", b"bc"), (b"bc", b"d"), (b"abc", b"d"),
    ]


def test_tiny_table_encodes_like_tiktoken():
    tiktoken = pytest.importorskip("tiktoken")
    ranks = tiny_ranks()
    ours = qt.byte_level_bpe(ranks)
    ref = tiktoken.Encoding("tiny", pat_str=qt.PRETOKENIZE_REGEX, mergeable_ranks=ranks, special_tokens={})
    rng = np.random.default_rng(0)
    texts = ["abcd", "xabcdy", "bcd abc", *("".join(rng.choice(list("abcd "), size=n)) for n in
                                           rng.integers(1, 14, size=300))]
    assert ours.encode("abcd").ids == [261]
    assert [e.ids for e in ours.encode_batch(texts)] == [ref.encode_ordinary(t) for t in texts]


def test_a_token_that_bpe_cannot_reach_is_an_error():
    ranks = {bytes([b]): b for b in range(256)}
    ranks[b"xyz"] = 256
    with pytest.raises(TokenizerError, match="cannot be built from lower-ranked"):
        qt.merges_from_ranks(ranks)


def test_bytes_to_unicode_is_gpt2s_map():
    mapping = qt.bytes_to_unicode()
    assert len(set(mapping.values())) == 256
    # Values as they appear in every byte-level BPE vocabulary (GPT-2, Qwen): "Ġ" is the space.
    assert [mapping[b] for b in (0x00, 0x09, 0x0A, 0x20, 0x21, 0x7E, 0x7F, 0xA0, 0xA1, 0xAD, 0xAE, 0xFF)] == [
        "\u0100", "\u0109", "\u010a", "\u0120", "!", "~", "\u0121", "\u0142", "\u00a1", "\u0143", "\u00ae", "\u00ff",
    ]


# ---------------------------------------------------------------- bad input


def test_missing_dashscope_names_the_install_command(monkeypatch, tmp_path):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "dashscope" else real_find_spec(name, *a))
    with pytest.raises(TokenizerError, match="pip install dashscope"):
        qt.build_qwen_tokenizer(tmp_path / "tok")
    assert not (tmp_path / "tok").exists()


def test_malformed_ranks_files_are_rejected(tmp_path):
    import base64

    def write(lines):
        path = tmp_path / "r.tiktoken"
        path.write_bytes(b"\n".join(lines) + b"\n")
        return path

    byte_lines = [base64.b64encode(bytes([b])) + b" %d" % b for b in range(256)]
    with pytest.raises(TokenizerError, match="ranks must be 0..256"):
        qt.load_ranks(write(byte_lines + [base64.b64encode(b"ab") + b" 7"]))
    with pytest.raises(TokenizerError, match=r"r.tiktoken:3: expected 'base64\(token\) rank'"):
        qt.load_ranks(write(byte_lines[:2] + [b"not-a-rank-line"]))
    with pytest.raises(TokenizerError, match="single-byte tokens"):
        qt.load_ranks(write(byte_lines[:200]))
    with pytest.raises(TokenizerError, match="but Qwen's BPE has 151643"):
        qt.build_qwen_tokenizer(tmp_path / "tok", ranks_file=write(byte_lines))


# ---------------------------------------------------------------- the files and their loading


@needs_dashscope
def test_loads_like_a_qwen3_repository(qwen_dir, qwen):
    from transformers import AutoTokenizer

    assert sorted(p.name for p in qwen_dir.iterdir()) == ["tokenizer.json", "tokenizer_config.json"]
    auto = AutoTokenizer.from_pretrained(str(qwen_dir))
    assert auto.get_vocab() == qwen.get_vocab()
    assert (qwen.vocab_size, len(qwen)) == (151_643, 151_669)  # 151,936 rows pad the rest
    assert len(qwen) <= qt.QWEN3_VOCAB_SIZE
    for token_id, text, special in qt.QWEN3_ADDED_TOKENS:
        assert qwen.convert_tokens_to_ids(text) == token_id
        assert ids_of(qwen, text) == [token_id]
        assert (text in qwen.all_special_tokens) == special
    assert (qwen.eos_token, qwen.eos_token_id) == ("<|im_end|>", 151645)
    assert (qwen.pad_token_id, qwen.bos_token) == (151643, None)
    ids = ids_of(qwen, "<think>\nok</think><|im_end|>")
    assert qwen.decode(ids, skip_special_tokens=True) == "<think>\nok</think>"  # think tags are not special


def test_chat_template_is_the_hub_file_byte_for_byte():
    # sha256 of huggingface/trl trl/chat_templates/qwen3.jinja (commit f2cd5771), which TRL keeps
    # equal to the chat_template of Qwen3 checkpoints to recognise them.
    digest = hashlib.sha256(qt.QWEN3_HUB_CHAT_TEMPLATE.encode()).hexdigest()
    assert digest == "a55ee1b1660128b7098723e0abcd92caa0788061051c62d51cbe87d9cf1974d8"


@needs_dashscope
def test_generation_prompt_with_and_without_thinking(qwen):
    head = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+3?<|im_end|>\n<|im_start|>assistant\n"
    assert render_chat(qwen, "2+3?", system="Be brief.") == head
    assert render_chat(qwen, "2+3?", system="Be brief.", enable_thinking=False) == head + "<think>\n\n</think>\n\n"
    # The toy template claims to match Qwen3's on single-turn prompts.
    for kwargs in ({}, {"system": "Be brief."}, {"enable_thinking": False}):
        full = render_chat(qwen, "What is 12*7?", **kwargs)
        assert full == qwen.apply_chat_template(
            ([{"role": "system", "content": kwargs["system"]}] if "system" in kwargs else [])
            + [{"role": "user", "content": "What is 12*7?"}],
            chat_template=QWEN3_CHAT_TEMPLATE, tokenize=False, add_generation_prompt=True,
            enable_thinking=kwargs.get("enable_thinking", True),
        )


@needs_dashscope
def test_history_keeps_reasoning_only_after_the_last_user_turn(qwen):
    messages = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "<think>\nr1\n</think>\n\nA1"},
        {"role": "user", "content": "b"},
        {"role": "assistant", "content": "B1", "reasoning_content": "r2"},
    ]
    assert qwen.apply_chat_template(messages, tokenize=False) == (
        "<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n"
        "<|im_start|>user\nb<|im_end|>\n<|im_start|>assistant\n<think>\nr2\n</think>\n\nB1<|im_end|>\n"
    )


# ---------------------------------------------------------------- against dashscope's tiktoken


@needs_dashscope
def test_every_token_alone_encodes_like_tiktoken(qwen, reference):
    texts = []
    for token in reference.decoder.values():
        if isinstance(token, bytes):
            try:
                texts.append(token.decode("utf-8"))
            except UnicodeDecodeError:
                pass
    assert len(texts) > 100_000
    assert [list(x) for x in qwen(texts, add_special_tokens=False)["input_ids"]] == plain_ids(reference, texts)


@needs_dashscope
def test_random_token_strings_and_character_soup_encode_like_tiktoken(qwen, reference):
    rng = np.random.default_rng(11)
    pieces = [reference.decoder[i] for i in range(qt.QWEN_BPE_TOKENS)]
    texts = [b"".join(pieces[i] for i in rng.integers(0, qt.QWEN_BPE_TOKENS, size=n)).decode("utf-8", "replace")
             for n in rng.integers(1, 12, size=3000)]
    alphabet = list("aZ09 _-.,'\"!?()[]{}<>/\\|#$%&*+=:;@^`~\t\n\r") + [
        "\u00a0", "\u3000", "\u00e9", "e\u0301", "\u00df", "\u0130", "\u4e2d", "\u6587", "\u3002", "\uff5e",
        "\u0416", "\u0645", "\u05d0", "\u0915", "\u094d", "\U0001f600", "\u200d", "\ufe0f", "'s", "'LL", "'Re",
        "\ufffd", "\x00",
    ]
    texts += ["".join(rng.choice(alphabet, size=n)) for n in rng.integers(1, 40, size=3000)]
    assert [list(x) for x in qwen(texts, add_special_tokens=False)["input_ids"]] == plain_ids(reference, texts)


# ---------------------------------------------------------------- token ids published for Qwen2/Qwen3

# ggerganov/llama.cpp models/ggml-vocab-qwen2.gguf.inp / .out (ids from the HF Qwen2 tokenizer)
LLAMA_CPP_QWEN2 = [
    ("ied 4 \u00bd months", [1122, 220, 19, 220, 26062, 3951]),
    ("F\u00fchrer", [37, 50753, 261]),
    (" ", [220]), ("  ", [256]), ("   ", [262]), ("\t", [197]), ("\n", [198]), ("\n\n", [271]),
    ("\n\n\n", [1406]), ("\t\n", [1572]),
    ("Hello world", [9707, 1879]), (" Hello world", [21927, 1879]), ("Hello World", [9707, 4337]),
    (" Hello World!", [21927, 4337, 0]), ("Hello, world!", [9707, 11, 1879, 0]),
    (" this is \U0001f999.cpp", [419, 374, 11162, 99, 247, 13, 10821]),
    ("w048 7tuijk dsdfhu", [86, 15, 19, 23, 220, 22, 83, 1963, 41808, 11472, 2940, 16739]),
    ("\u043d\u0435\u0449\u043e \u043d\u0430 \u0411\u044a\u043b\u0433\u0430\u0440\u0441\u043a\u0438",
     [78762, 14144, 1456, 13073, 63471, 33594, 3038, 133178, 79012]),
    ("\U0001f680 (normal) \U0001f636\u200d\U0001f32b\ufe0f (multiple emojis concatenated) \u2705 (only emoji that "
     "has its own token)", [145836, 320, 8252, 8, 26525, 114, 378, 235, 149921, 30543, 320, 35673, 99066, 97534, 8,
                            25521, 227, 320, 3243, 42365, 429, 702, 1181, 1828, 3950, 8]),
    ("    Hello\n    Hello", [262, 21927, 198, 262, 21927]),
    ("\n =", [198, 284]), ("' era", [6, 11385]),
    ("Hello, y'all! How are you \U0001f601 ?\u6211\u60f3\u5728apple\u5de5\u4f5c1314151\u5929\uff5e",
     [9707, 11, 379, 64848, 0, 2585, 525, 498, 26525, 223, 937, 104100, 18493, 22377, 99257, 16, 18, 16, 19, 16,
      20, 16, 35727, 21216]),
    ("333333333", [18] * 9),
]

# xenova/transformers.js tests/models/qwen2/tokenization.js (Xenova/Qwen1.5-0.5B-Chat: the same BPE)
TRANSFORMERS_JS_QWEN = [
    ("How are you doing?", [4340, 525, 498, 3730, 30]),
    ("You should've done this", [2610, 1265, 3003, 2814, 419]),
    ("The company was founded in 2016.", [785, 2813, 572, 18047, 304, 220, 17, 15, 16, 21, 13]),
    ("A\n'll !!to?'d''d of, can't.", [32, 198, 3278, 11015, 983, 20224, 67, 4605, 67, 315, 11, 646, 944, 13]),
    ("def main():\n\tpass", [750, 1887, 3932, 41431]),
    ("let a = obj.toString();\ntoString();", [1149, 264, 284, 2839, 5070, 543, 6575, 2129]),
    ("This\n\nis\na\ntest.", [1986, 271, 285, 198, 64, 198, 1944, 13]),
    ("UNwant\u00e9d,running", [1861, 52657, 15083, 11, 27173]),
    ("1\u00002\ufffd3", [16, 188, 17, 5691, 18]),
    ("\u751f\u6d3b\u7684\u771f\u8c1b\u662f", [105301, 88051, 116109, 20412]),
    ("   leading space", [256, 6388, 3550]),
    ("trailing space   ", [376, 14277, 3550, 262]),
    ("Hi  Hello", [13048, 220, 21927]),
    ("test $1 R2 #3 \u20ac4 \u00a35 \u00a56 \u20a37 \u20b98 \u20b19 test",
     [1944, 400, 16, 431, 17, 671, 18, 12984, 19, 6938, 20, 71488, 21, 2858, 224, 96, 22, 89791, 23, 2858, 224, 109,
      24, 1273]),
    ("you\u2026\u00a0\u00a0you\u2026\u00a0\u00a0", [9330, 1940, 4102, 4102, 9330, 1940, 9238]),
    ("weird \uff5e edge \uff5e case", [896, 2603, 220, 21216, 6821, 220, 21216, 1142]),
    ("\u2581This \u2581is \u2581a \u2581test \u2581.",
     [10417, 223, 1986, 14520, 223, 285, 14520, 223, 64, 14520, 223, 1944, 14520, 223, 13]),
    # alibaba/rtp-llm maga_transformer/test/tokenizer_test/qwen2_tokenizer_test.py
    ("<|im_start|>hello<|im_end|>", [151644, 14990, 151645]),
]


@needs_dashscope
@pytest.mark.parametrize("text, expected", LLAMA_CPP_QWEN2 + TRANSFORMERS_JS_QWEN,
                         ids=[repr(t[:24]) for t, _ in LLAMA_CPP_QWEN2 + TRANSFORMERS_JS_QWEN])
def test_published_qwen2_ids(qwen, text, expected):
    assert ids_of(qwen, text) == expected
    assert qwen.decode(expected) == unicodedata.normalize("NFC", text)


# sgl-project/SpecForge tests/test_data/test_parsers.py (commit a6b6b023): conversations rendered by
# Qwen/Qwen3-0.6B's chat template (system prompt from the "qwen3-instruct" template) and tokenized
# without special tokens; ids in tests/test_data/test_references/qwen3-instruct_{standard,tool-use}_ref.json.
SPECFORGE_SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
SPECFORGE_STANDARD = [
    {"role": "user", "content": "Who are you?"},
    {"role": "assistant", "content": "My name is Qwen2."},
    {"role": "user", "content": "How old are you?"},
    {"role": "assistant", "content": "11 years old."},
]
SPECFORGE_STANDARD_IDS = [
    151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198, 151644, 872, 198, 15191, 525, 498, 30, 151645,
    198, 151644, 77091, 198, 5050, 829, 374, 1207, 16948, 17, 13, 151645, 198, 151644, 872, 198, 4340, 2310, 525, 498,
    30, 151645, 198, 151644, 77091, 198, 151667, 271, 151668, 271, 16, 16, 1635, 2310, 13, 151645, 198,
]
SPECFORGE_TOOL_USE = [
    {"role": "user", "content": "我想知道今天北京和上海的天气怎么样？"},
    {"role": "assistant", "content": "我来帮您查询北京和上海的天气情况。", "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": {"location": "北京", "date": "today"}}},
        {"type": "function", "function": {"name": "get_weather", "arguments": {"location": "上海", "date": "today"}}},
    ]},
    {"role": "tool", "content": '{"location": "北京", "temperature": 25, "condition": "晴朗", "humidity": "45%"}'},
    {"role": "tool", "content": '{"location": "上海", "temperature": 28, "condition": "多云", "humidity": "65%"}'},
    {"role": "assistant", "content": "根据查询结果，北京今天晴朗，25°C；上海多云，28°C。两地都比较适合出行。"},
]
SPECFORGE_TOOL_USE_IDS = [
    151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198, 151644, 872, 198, 104100, 99392, 100644, 68990,
    33108, 100633, 9370, 104307, 104472, 11319, 151645, 198, 151644, 77091, 198, 35946, 36407, 99663, 87026, 51154,
    68990, 33108, 100633, 9370, 104307, 99559, 8997, 151657, 198, 4913, 606, 788, 330, 455, 69364, 497, 330, 16370,
    788, 5212, 2527, 788, 330, 68990, 497, 330, 1028, 788, 330, 30113, 95642, 151658, 198, 151657, 198, 4913, 606,
    788, 330, 455, 69364, 497, 330, 16370, 788, 5212, 2527, 788, 330, 100633, 497, 330, 1028, 788, 330, 30113, 95642,
    151658, 151645, 198, 151644, 872, 198, 151665, 198, 4913, 2527, 788, 330, 68990, 497, 330, 34558, 788, 220, 17,
    20, 11, 330, 9056, 788, 330, 105212, 100106, 497, 330, 93046, 788, 330, 19, 20, 15794, 532, 151666, 198, 151665,
    198, 4913, 2527, 788, 330, 100633, 497, 330, 34558, 788, 220, 17, 23, 11, 330, 9056, 788, 330, 42140, 99718, 497,
    330, 93046, 788, 330, 21, 20, 15794, 532, 151666, 151645, 198, 151644, 77091, 198, 151667, 271, 151668, 271,
    100345, 51154, 59151, 3837, 68990, 100644, 105212, 100106, 3837, 17, 20, 30937, 24968, 100633, 42140, 99718,
    3837, 17, 23, 30937, 1773, 109415, 71268, 99792, 100231, 104434, 1773, 151645, 198,
]


@needs_dashscope
@pytest.mark.parametrize("messages, expected", [(SPECFORGE_STANDARD, SPECFORGE_STANDARD_IDS),
                                                (SPECFORGE_TOOL_USE, SPECFORGE_TOOL_USE_IDS)],
                         ids=["multi_turn", "tool_calls"])
def test_published_qwen3_chat_ids(qwen, messages, expected):
    text = qwen.apply_chat_template([SPECFORGE_SYSTEM, *messages], tokenize=False)
    assert ids_of(qwen, text) == expected


@needs_dashscope
def test_non_thinking_generation_prompt_ids(qwen):
    # The same "<|im_start|>assistant\n<think>\n\n</think>\n\n" ids as SpecForge's last assistant turn above.
    assert encode_chat(qwen, "Who are you?", enable_thinking=False)[-7:] == SPECFORGE_STANDARD_IDS[42:49]
    assert encode_chat(qwen, "Who are you?")[-3:] == [151644, 77091, 198]


@needs_dashscope
def test_bpe_merges_across_the_prompt_response_boundary(qwen):
    # Why stand-ins need the real vocabulary: a response that starts with "\n" after the
    # non-thinking prompt's "\n\n" is one token "\n\n\n" (1406) in the whole text, not 271 + 198.
    prompt = ids_of(qwen, render_chat(qwen, "Who are you?", enable_thinking=False))
    whole = ids_of(qwen, render_chat(qwen, "Who are you?", enable_thinking=False) + "\nI am")
    assert prompt[-1] == 271 and ids_of(qwen, "\nI am")[0] == 198
    assert whole == prompt[:-1] + [1406] + ids_of(qwen, "I am")  # 1406: "\n\n\n" in llama.cpp's list
