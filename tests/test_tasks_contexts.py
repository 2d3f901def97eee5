"""toy_arith, the paper's context formats, demonstration sampling and caching, prompt alignment."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign.contexts import (
    DemonstrationCache,
    Demonstrations,
    ToyRuleSummarizer,
    build_context,
    check_same_generation_prompt,
    sample_demonstrations,
)
from jaxalign.errors import ConfigError, TokenizerError
from jaxalign.models.tokenizer import encode_chat
from jaxalign.policy import SampleBatch
from jaxalign.tasks.base import final_answer
from jaxalign.tasks.toy_arith import ToyArith
from jaxalign.toy.tokenizer import build_char_tokenizer

TASK = ToyArith()


def test_toy_questions_are_deterministic_and_graded():
    a, b = TASK.questions(50, seed=3), TASK.questions(50, seed=3)
    assert a == b and len({q.qid for q in a}) == 50 and len({q.user for q in a}) == 50
    q = TASK.make([47, 38, 16])
    ref = TASK.reference_response(q)
    assert ref == "<think>\n47+38=85. 85+16=101.\n</think>\n\nAnswer: 101"
    assert TASK.grade(q, ref) and q.answer == "101"
    rng = np.random.default_rng(0)
    for step in (0, 1):  # an early wrong digit carries into the answer
        wrong = TASK.reference_response(q, error_at=step, rng=rng)
        assert not TASK.grade(q, wrong)
    assert final_answer("Answer: 3\nAnswer: 5.") == "5" and final_answer("no answer") is None
    assert not TASK.grade(q, "Answer: 1010")


def test_context_formats_follow_the_paper():
    q = TASK.make([12, 34, 56])
    demos = Demonstrations(correct=("C-DEMO",), wrong=("W-DEMO",), trials=3)
    one = build_context("SELF-1C", q, demos)
    assert one.startswith(q.user + "\n\nDemonstration\nThis is a correct response to the question:\n")
    assert '"""\nC-DEMO\n"""' in one and one.endswith(
        "Now answer with a response of your own, including the thinking process:")
    both = build_context("SELF-1C1W", q, demos)
    assert "Some are CORRECT and some are WRONG -- the wrong responses contain mistakes" in both
    assert both.index("C-DEMO") < both.index("WRONG (do NOT imitate):") < both.index("W-DEMO")
    ref = TASK.reference_response(q)
    summary = build_context("SELF-SUM-1C", q, Demonstrations((ref,), (), 1), ToyRuleSummarizer())
    assert "Summarized Demonstration" in summary and "Partial sums 46, 102. Answer: 102" in summary
    assert build_context("SELF-1C1W", q, Demonstrations(("c",), (), 60)) is None  # no wrong demo found
    with pytest.raises(ConfigError, match="unknown context format"):
        build_context("SELF-9C", q, demos)
    with pytest.raises(ConfigError, match="summarizer"):
        build_context("SELF-SUM-1C", q, demos)


def test_teacher_prompt_must_end_like_the_students(tmp_path):
    tok = build_char_tokenizer(tmp_path / "tok")
    q = TASK.make([12, 34, 56])
    student = encode_chat(tok, q.user)
    teacher = encode_chat(tok, build_context("SELF-1C", q, Demonstrations(("d",), (), 1)))
    check_same_generation_prompt(student, teacher, tok)
    no_think = encode_chat(tok, q.user, enable_thinking=False)
    with pytest.raises(TokenizerError, match="would not line up"):
        check_same_generation_prompt(student, no_think, tok, "SELF-1C")


class ScriptedPolicy:
    """Returns pre-scripted responses in order, as token ids of a char tokenizer."""

    eos_token_ids = (2,)

    def __init__(self, tokenizer, responses):
        self.tok, self.responses, self.calls = tokenizer, list(responses), 0

    def sample(self, prompt, prefixes, n, max_new_tokens, temperature, key):
        assert temperature == 0.7
        rows = [self.tok(self.responses.pop(0), add_special_tokens=False)["input_ids"] + [2] for _ in range(n)]
        width = max(map(len, rows))
        tokens = np.full((n, width), -1)
        for i, r in enumerate(rows):
            tokens[i, : len(r)] = r
        self.calls += 1
        return SampleBatch(tokens, np.array([len(r) for r in rows]), np.zeros(n, np.int64))


def test_demonstrations_are_retried_graded_and_cached(tmp_path):
    tok = build_char_tokenizer(tmp_path / "tok")
    q = TASK.make([10, 20, 30])
    responses = ["Answer: 7"] * 5 + ["Answer: 60"] + ["Answer: 8"] * 4
    policy = ScriptedPolicy(tok, responses)
    cache = DemonstrationCache(tmp_path / "demos", "toy/student")
    kwargs = dict(need_correct=1, need_wrong=1, batch=5, cache=cache)
    demos = sample_demonstrations(policy, lambda u: encode_chat(tok, u), tok.decode, lambda t: TASK.grade(q, t), q,
                                  jax.random.key(0), **kwargs)
    assert demos.correct == ("Answer: 60",) and demos.wrong == ("Answer: 7",) and demos.trials == 10
    assert cache.path(q.qid).is_file() and policy.calls == 2
    again = sample_demonstrations(policy, None, None, None, q, jax.random.key(0), **kwargs)
    assert again == demos and policy.calls == 2  # served from the cache, nothing sampled

    never = ScriptedPolicy(tok, ["Answer: 1"] * 60)
    q2 = TASK.make([11, 22, 33])
    demos = sample_demonstrations(never, lambda u: encode_chat(tok, u), tok.decode, lambda t: TASK.grade(q2, t), q2,
                                  jax.random.key(0), batch=20, max_trials=60, cache=cache)
    assert demos.correct == () and demos.trials == 60 and never.calls == 3


def test_grown_teacher_starts_as_the_student(tmp_path):
    from jaxalign.models.init import init_params
    from jaxalign.models.qwen3 import forward
    from jaxalign.toy.train import STUDENT, grow, model_config

    tok = build_char_tokenizer(tmp_path / "tok")
    cfg = model_config(STUDENT, tok)
    params = init_params(cfg, jax.random.key(0), jnp.float32, scale=0.1)
    bigger, grown = grow(params, cfg, jax.random.key(1))
    assert bigger.num_layers == cfg.num_layers + 1 and len(grown.layers) == bigger.num_layers
    tokens = np.arange(20, dtype=np.int32)[None] + 5
    np.testing.assert_allclose(np.asarray(forward(grown, bigger, tokens)), np.asarray(forward(params, cfg, tokens)),
                               atol=1e-6)
