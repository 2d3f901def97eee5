"""toy_arith, the paper's context formats, demonstration sampling and caching, prompt alignment."""

import json

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


# --------------------------------------------------------------------------- the teacher registry
from jaxalign.teachers import (DemoNeed, Excluded, ModelSummarizer, SummaryCache, context_needs,  # noqa: E402
                               summary_request, teacher_message)
from jaxalign.teachers.formats import FORMATS, self_3c, self_sum_1c1w  # noqa: E402
from jaxalign.teachers.prepass import ContextSettings, Contexts, Generator, Stopped  # noqa: E402


def test_the_formats_without_a_figure_are_written_out():
    assert self_sum_1c1w("Q?", "c", "w") == (
        'Q?\n\nSummarized Demonstrations\n\nBelow are example responses to the question. Some are CORRECT and some '
        'are WRONG -- the wrong responses contain mistakes and should NOT be imitated.\n\nCorrect:\n\n"""\nc\n"""\n\n'
        'WRONG (do NOT imitate):\n\n"""\nw\n"""\n\nNow answer with a response of your own, including the thinking '
        'process:')
    assert self_3c("Q?", "a", "b", "c") == (
        'Q?\n\nDemonstrations\nThese are correct responses to the question:\n"""\na\n"""\n\n"""\nb\n"""\n\n"""\nc\n"""'
        '\n\nNow answer with a response of your own, including the thinking process:')
    counts = {name: (f.correct, f.wrong, f.summarized) for name, f in FORMATS.items()}
    assert counts == {"SELF-1C": (1, 0, False), "SELF-1C1W": (1, 1, False), "SELF-SUM-1C": (1, 0, True),
                      "SELF-SUM-1C1W": (1, 1, True), "SELF-3C": (3, 0, False)}


def _conf(context, source=None, summarizer=None, kind="self", model=None):
    from jaxalign.config import TeacherConf

    return TeacherConf(kind=kind, context=context, source=source, summarizer=summarizer, model=model)


PAPER8 = {"SELF-1C": _conf("SELF-1C"), "SELF-1C-32B": _conf("SELF-1C", source="big"),
          "SELF-SUM-1C": _conf("SELF-SUM-1C", summarizer="big"), "SELF-1C1W": _conf("SELF-1C1W"),
          "SELF-SUM-1C1W": _conf("SELF-SUM-1C1W", summarizer="big"), "ext": _conf(None, kind="external", model="x")}


def test_context_needs_are_the_union_per_source_and_summarizer():
    needs = context_needs({**PAPER8, "SELF-3C": _conf("SELF-3C")}, "student")
    assert needs.demos == {"student": DemoNeed(3, 1), "big": DemoNeed(1, 0)}
    assert needs.summaries == {("student", "big"): True}
    assert needs.models == ["student", "big"]


def test_a_teacher_without_what_its_format_needs_is_excluded_with_the_reason():
    q = TASK.make([12, 34, 56])
    one = Demonstrations(("c1",), (), 60)
    assert teacher_message("A", _conf("SELF-1C1W"), q, one) == Excluded("A: no wrong demonstration from the student "
                                                                        "in 60 trials")
    assert teacher_message("B", _conf("SELF-3C"), q, one) == Excluded("B: only 1 of 3 correct demonstrations from the "
                                                                      "student in 60 trials")
    assert teacher_message("C", _conf("SELF-1C", source="big"), q, Demonstrations((), ("w",), 60)) == Excluded(
        "C: no correct demonstration from big in 60 trials")
    empty = Demonstrations(("",), (), 1)
    assert teacher_message("D", _conf("SELF-SUM-1C", summarizer="big"), q, one, empty) == Excluded(
        "D: the summarizer big returned an empty summary")
    shown = teacher_message("E", _conf("SELF-SUM-1C", summarizer="big"), q, one, Demonstrations(("short",), (), 1))
    assert '"""\nshort\n"""' in shown and "c1" not in shown


class EchoPolicy:
    """Answers every prompt with a fixed text (char tokens) and records the prompts it saw."""

    eos_token_ids = (2,)

    def __init__(self, tokenizer, reply):
        self.tok, self.reply, self.prompts = tokenizer, reply, []

    def sample(self, prompt, prefixes, n, max_new_tokens, temperature, key):
        self.prompts.append(self.tok.decode(prompt))
        row = self.tok(self.reply, add_special_tokens=False)["input_ids"][:max_new_tokens] + [2]
        return SampleBatch(np.array([row] * n), np.array([len(row)] * n), np.zeros(n, np.int64))


def test_the_model_summarizer_asks_with_the_written_prompt_and_drops_thinking(tmp_path):
    tok = build_char_tokenizer(tmp_path / "tok")
    q = TASK.make([10, 20, 30])
    policy = EchoPolicy(tok, "<think>\nhmm\n</think>\n\n10+20+30=60. Answer: 60")
    summarizer = ModelSummarizer(policy, lambda u: encode_chat(tok, u, enable_thinking=False), tok.decode,
                                 max_new_tokens=200)
    assert summarizer.summarize(q, "a long response", jax.random.key(0)) == "10+20+30=60. Answer: 60"
    assert summary_request(q, "a long response") in policy.prompts[0]
    assert "Condense the response to its key reasoning steps and its final answer" in policy.prompts[0]
    assert policy.prompts[0].endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")  # non-thinking mode
    cut = ModelSummarizer(EchoPolicy(tok, "<think>\nstill thinking"), lambda u: encode_chat(tok, u), tok.decode,
                          max_new_tokens=200)
    assert cut.summarize(q, "x", jax.random.key(0)) == ""  # cut off inside its thinking: no summary


def test_caches_answer_a_need_only_when_they_can(tmp_path):
    cache = DemonstrationCache(tmp_path, "Qwen/Qwen3-32B")
    assert cache.dir.name == "Qwen_Qwen3-32B"
    cache.save("q", Demonstrations(("c",), (), 60), DemoNeed(1, 0))
    assert cache.answers("q", DemoNeed(1, 0), 60) is not None
    assert cache.answers("q", DemoNeed(3, 0), 60) is None  # looked for 1 only: the 60 trials may hold 3
    cache.save("q", Demonstrations(("c",), (), 60), DemoNeed(3, 1))
    assert cache.answers("q", DemoNeed(3, 0), 60).correct == ("c",)  # looked for 3 in all 60: settled
    assert cache.answers("q", DemoNeed(3, 0), 80) is None  # more trials allowed now
    summaries = SummaryCache(tmp_path / "s", "big", "student")
    demos = Demonstrations(("c",), ("w",), 5)
    summaries.save("q", demos, Demonstrations(("sc",), ("sw",), 5))
    assert summaries.load("q", demos).correct == ("sc",)
    assert summaries.load("q", Demonstrations(("other",), ("w",), 5)) is None  # the demonstration changed


class FakePool:
    """Models that answer with a fixed text, recording what was loaded and released."""

    def __init__(self, tok, replies):
        self.tok, self.replies, self.events, self.policies = tok, replies, [], {}

    def generator(self, model):
        self.events.append(("load", model))
        policy = self.policies[model] = EchoPolicy(self.tok, self.replies[model])
        return Generator(policy, lambda u, thinking: encode_chat(self.tok, u), self.tok.decode)

    def release(self, model):
        self.events.append(("release", model))


def test_the_prepass_runs_each_model_once_in_order_and_resumes_from_its_caches(tmp_path):
    tok = build_char_tokenizer(tmp_path / "tok")
    questions = TASK.questions(2, seed=0)
    right = {q.qid: TASK.reference_response(q) for q in questions}
    contexts = Contexts(PAPER8, "student", lambda q, text: TASK.grade(text, q.answer), tmp_path / "cache",
                        ContextSettings(max_trials=4, batch=2), lambda qid, *path: jax.random.key(len(path)))
    assert contexts.steps() == [("demos", "student"), ("demos", "big"), ("summaries", "big")]
    q0 = questions[0]
    pool = FakePool(tok, {"student": "Answer: 1", "big": right[q0.qid]})
    contexts.prepare(questions, pool)
    assert [e for e in pool.events if e[0] == "release"] == [("release", "big")]  # once, after its last step
    assert pool.events[0] == ("load", "student")
    messages = contexts.messages(q0)
    assert isinstance(messages["SELF-1C"], Excluded) and "no correct demonstration from the student" in \
        messages["SELF-1C"].reason
    assert right[q0.qid] in messages["SELF-1C-32B"]
    assert isinstance(messages["SELF-SUM-1C"], Excluded)  # nothing of the student's to summarize
    assert contexts.available(q0) == {"student": False, "big": True}
    again = FakePool(tok, {"student": "unused", "big": "unused"})
    contexts.prepare(questions, again)
    assert [e for e in again.events if e[0] == "load"] == []  # all cached: nothing loaded

    # a stop is honoured before each round of demonstrations: the questions still searching keep their
    # progress, and the resumed job samples only the rounds left (wrong answers only: 2 rounds of 2 trials)
    asked = []

    def stop_after_one_round():
        asked.append(1)
        return len(asked) > 1

    def contexts_at(root):
        return Contexts(PAPER8, "student", lambda q, text: TASK.grade(text, q.answer), root,
                        ContextSettings(max_trials=4, batch=2), lambda qid, *path: jax.random.key(0))

    stopping = contexts_at(tmp_path / "stopped")
    with pytest.raises(Stopped, match="demonstrations of student"):
        stopping.prepare(questions, FakePool(tok, {"student": "x", "big": "y"}), stop=stop_after_one_round)
    files = sorted((tmp_path / "stopped" / "demos" / "student").glob("*.json"))
    assert [f.name.endswith(".partial.json") for f in files] == [True, True]
    assert [(raw["trials"], raw["wrong"]) for raw in map(lambda f: json.loads(f.read_text()), files)] \
        == [(2, ["x", "x"])] * 2
    assert all(stopping.demo_caches["student"].answers(q.qid, DemoNeed(1, 1), 4) is None for q in questions)
    resumed = FakePool(tok, {"student": "x", "big": "y"})
    stopping.prepare(questions, resumed)
    # one round: a call per question (EchoPolicy has no sample_prompts), the first round not sampled again
    assert len(resumed.policies["student"].prompts) == 2
    assert sorted(f.name for f in (tmp_path / "stopped" / "demos" / "student").glob("*.json")) == sorted(
        f"{q.qid}.json" for q in questions)  # finished: the progress files are gone
    whole = contexts_at(tmp_path / "whole")
    whole.prepare(questions, FakePool(tok, {"student": "x", "big": "y"}))
    assert [stopping.messages(q) for q in questions] == [whole.messages(q) for q in questions]
    assert [stopping._demos("student", q) for q in questions] == [whole._demos("student", q) for q in questions]


def test_demonstrations_and_summaries_of_many_questions_equal_one_question_at_a_time(tmp_path, monkeypatch):
    """The toy student samples 5 questions' demonstrations in one engine call per round, each question
    under its own key, queued on 4 decode rows, and summarizes them in calls of at most 2,048 prompt
    slots: the texts are those of one question at a time."""
    from jaxalign.config import ASSETS
    from jaxalign.engine import policy as engine_policy
    from jaxalign.engine.policy import FlaxPolicy
    from jaxalign.models import load_qwen3, load_tokenizer
    from jaxalign.teachers import ModelSummarizer, sample_demonstrations_of, summarize_demonstrations_of
    from jaxalign.teachers.summarizers import prompt_groups, summarize_demonstrations, summary_request

    cfg, params = load_qwen3(ASSETS / "toy" / "student", jnp.float32)
    tok = load_tokenizer(ASSETS / "toy" / "student")
    policy = FlaxPolicy(params, cfg, cfg.eos_token_ids)
    calls = []
    engine_sample = engine_policy.sample
    monkeypatch.setattr(engine_policy, "sample", lambda *a, **k: calls.append(len(a[2])) or engine_sample(*a, **k))
    questions = TASK.questions(5, seed=5)  # questions that drop out after 1, 2 and 3 rounds
    items = [(q, lambda text, q=q: TASK.grade(q, text), jax.random.key(i)) for i, q in enumerate(questions)]
    kwargs = dict(need_correct=1, need_wrong=1, batch=3, max_trials=9, max_new_tokens=64, temperature=0.7)
    encode = lambda u: encode_chat(tok, u)  # noqa: E731
    together = sample_demonstrations_of(policy, encode, tok.decode, items, max_rows=4, **kwargs)
    rounds = len(calls)
    alone = [sample_demonstrations(policy, encode, tok.decode, grade, q, key, **kwargs) for q, grade, key in items]
    assert together == alone
    # one call per round, with the questions still lacking a demonstration, padded to a power of two
    # (the padding's rows dropped): 5 -> 8, then 2, then 1; one question at a time took 5 + 2 + 1 calls
    assert sorted(d.trials for d in together) == [3, 3, 3, 6, 9]
    assert calls[:rounds] == [8, 2, 1] and len(calls) - rounds == 8

    # stopped before its second round, then resumed: the same demonstrations, no round sampled twice
    cache, asked = DemonstrationCache(tmp_path / "demos", "toy"), []
    stopped = sample_demonstrations_of(policy, encode, tok.decode, items, max_rows=4, cache=cache,
                                       stop=lambda: asked.append(1) or len(asked) > 1, **kwargs)
    assert [d is None for d in stopped] == [d.trials > 3 for d in together]
    calls.clear()
    assert sample_demonstrations_of(policy, encode, tok.decode, items, max_rows=4, cache=cache, **kwargs) == together
    assert calls == [2, 1]
    # progress saved under other settings is not resumed (that would mix two searches): from trial 0
    other, asked = DemonstrationCache(tmp_path / "other", "toy"), []
    sample_demonstrations_of(policy, encode, tok.decode, items, max_rows=4, cache=other,
                             stop=lambda: asked.append(1) or len(asked) > 1, **kwargs)
    unfinished = [items[i] for i, d in enumerate(together) if d.trials > 3]
    assert len(list(other.dir.glob("*.partial.json"))) == len(unfinished) == 2
    hotter = {**kwargs, "temperature": 0.9}
    assert sample_demonstrations_of(policy, encode, tok.decode, unfinished, max_rows=4, cache=other, **hotter) == [
        sample_demonstrations(policy, encode, tok.decode, grade, q, key, **hotter) for q, grade, key in unfinished]

    summarizer = ModelSummarizer(policy, encode, tok.decode, max_new_tokens=32, max_rows=4, max_prefix_slots=2048)
    demo_items = [(q, d, jax.random.key(10 + i)) for i, (q, d) in enumerate(zip(questions, together))]
    calls.clear()
    batched = summarize_demonstrations_of(summarizer, demo_items)

    def requests_of(item):
        q, d, _ = item
        return [summary_request(q, text) for text in (*d.correct[:1], *d.wrong[:1])]

    requests = [r for item in demo_items for r in requests_of(item)]
    groups = prompt_groups([len(encode(r)) for r in requests], 2048)
    assert calls == [1 << (len(g) - 1).bit_length() for g in groups] and 1 < len(calls) < len(requests)
    assert batched == [summarize_demonstrations(summarizer, q, d, key) for q, d, key in demo_items]

    # stopped after the first call: the questions it finished are handed over (to be saved) as they
    # finish, the rest come back None; summarizing those afterwards gives the same summaries
    asked, saved = [], {}
    stopped = summarize_demonstrations_of(summarizer, demo_items, done=lambda i, d: saved.setdefault(i, d),
                                          stop=lambda: asked.append(1) or len(asked) > 1)
    first_call = {owner for owner in range(len(demo_items))
                  if all(j in groups[0] for j, r in enumerate(requests) if r in requests_of(demo_items[owner]))}
    assert {i for i, d in enumerate(stopped) if d is not None} == set(saved) == first_call and 0 < len(saved) < 5
    assert all(stopped[i] == batched[i] for i in saved)
    rest = [i for i, d in enumerate(stopped) if d is None]
    assert summarize_demonstrations_of(summarizer, [demo_items[i] for i in rest]) == [batched[i] for i in rest]


def test_summaries_of_the_students_demonstrations_come_from_the_summarizer(tmp_path):
    tok = build_char_tokenizer(tmp_path / "tok")
    q = TASK.questions(1, seed=0)[0]
    teachers = {"SUM": _conf("SELF-SUM-1C1W", summarizer="big")}
    contexts = Contexts(teachers, "student", lambda q, text: TASK.grade(text, q.answer), tmp_path,
                        ContextSettings(max_trials=4, batch=2), lambda qid, *path: jax.random.key(0))
    scripted = ScriptedPolicy(tok, [TASK.reference_response(q), "Answer: 0"])  # one batch of 2: right, wrong

    class Pool(FakePool):
        def generator(self, model):
            self.events.append(("load", model))
            if model == "student":
                return Generator(scripted, lambda u, thinking: encode_chat(tok, u), tok.decode)
            return super().generator(model)

    contexts.prepare([q], Pool(tok, {"big": "Answer: 2"}))
    message = contexts.messages(q)["SUM"]
    assert message.count('"""\nAnswer: 2\n"""') == 2  # both demonstrations, as the summarizer wrote them


class OraclePolicy:
    """Answers each question right (its reference response) and summarizes as 'summary of QID',
    recognising the question in the prompt; counts the summary prompts it saw."""

    eos_token_ids = (2,)

    def __init__(self, tok, questions):
        self.tok, self.questions, self.summaries = tok, questions, 0

    def sample(self, prompt, prefixes, n, max_new_tokens, temperature, key):
        text = self.tok.decode(prompt)
        q = next(q for q in self.questions if q.user in text)
        summarizing = "Condense" in text
        self.summaries += summarizing
        reply = f"summary of {q.qid}" if summarizing else TASK.reference_response(q)
        row = self.tok(reply, add_special_tokens=False)["input_ids"] + [2]
        return SampleBatch(np.array([row] * n), np.array([len(row)] * n), np.zeros(n, np.int64))


def test_a_stop_between_summary_calls_keeps_the_summaries_written(tmp_path):
    """One summary per call (max_prefix_slots=1): stopped after the first call, that question's
    summary is saved; the resumed pre-pass writes only the others, and the messages are an
    uninterrupted run's."""
    tok = build_char_tokenizer(tmp_path / "tok")
    questions = TASK.questions(3, seed=1)
    oracles = {}

    class Pool(FakePool):
        def generator(self, model):
            oracles[model] = oracles.get(model) or OraclePolicy(tok, questions)
            return Generator(oracles[model], lambda u, thinking: encode_chat(tok, u), tok.decode)

    def contexts_at(root):
        return Contexts({"SUM": _conf("SELF-SUM-1C", summarizer="big")}, "student",
                        lambda q, text: TASK.grade(text, q.answer), root,
                        ContextSettings(max_trials=2, batch=2, max_prefix_slots=1), lambda qid, *path: jax.random.key(0))

    stopping = contexts_at(tmp_path / "stopped")
    with pytest.raises(Stopped, match="summaries of big"):
        stopping.prepare(questions, Pool(tok, {}), stop=lambda: "big" in oracles and oracles["big"].summaries >= 1)
    saved = list((tmp_path / "stopped" / "summaries").rglob("*.json"))
    assert oracles["big"].summaries == 1 and len(saved) == 1
    oracles.clear()
    stopping.prepare(questions, Pool(tok, {}))
    assert oracles["big"].summaries == 2  # the other two questions only
    oracles.clear()
    whole = contexts_at(tmp_path / "whole")
    whole.prepare(questions, Pool(tok, {}))
    assert [stopping.messages(q) for q in questions] == [whole.messages(q) for q in questions]
    assert all(f"summary of {q.qid}" in stopping.messages(q)["SUM"] for q in questions)


def test_summary_calls_hold_at_most_max_prefix_slots_of_prompts():
    """The engine pads a call's prompts to the longest one's power-of-two slots (at least 128)."""
    from jaxalign.teachers.summarizers import prompt_groups

    assert prompt_groups([100, 200, 5000, 100, 40000, 10], 32768) == [[0, 1, 2, 3], [4], [5]]  # 4 x 8192; alone
    assert [len(g) for g in prompt_groups([100] * 300, 32768)] == [256, 44]  # 128 slots each
    assert prompt_groups([100] * 3, None) == [[0, 1, 2]] and prompt_groups([], 1024) == []
    # the memory check and the dry run size summary calls by the same rule
    from jaxalign.cost import summaries_per_call

    for length in (100, 600, 1200, 3000, 5000, 15300, 40000):
        assert summaries_per_call(length, 32768) == len(prompt_groups([length] * 1000, 32768)[0]), length
