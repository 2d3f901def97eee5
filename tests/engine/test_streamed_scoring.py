"""Streamed scoring: the chunked prefill and the on-device reductions equal the whole-array path."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign.engine.policy import FlaxPolicy
from jaxalign.engine.scoring import candidate_tokens, chunk_logprobs, compare, path_hidden, response_logprobs
from jaxalign.enrich import Candidates
from jaxalign.errors import ConfigError
from jaxalign.exact import ExactPolicy
from jaxalign.models.config import Qwen3Config
from jaxalign.models.init import init_params
from jaxalign.pipeline import Teacher
from jaxalign.pipeline.candidates import skeleton_candidates
from jaxalign.pipeline.phase2 import _gathers
from jaxalign.tree import RolloutTree

CFG = Qwen3Config(vocab_size=512, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                  num_kv_heads=2, head_dim=16, rope_theta=1e4, rms_norm_eps=1e-6, tie_word_embeddings=False,
                  max_position_embeddings=512)


@pytest.fixture(scope="module")
def params():
    return init_params(CFG, jax.random.key(0), scale=0.3, norm_jitter=0.1)


def _streamed(params, prompt, response, positions, prefill_chunk, chunk):
    hidden, offset = path_hidden(params, CFG, prompt, response, prefill_chunk)
    pieces = [np.asarray(c) for c in chunk_logprobs(params, hidden, offset, positions, chunk)]
    assert all(p.shape == (chunk, CFG.vocab_size) for p in pieces)
    return np.concatenate(pieces)[: len(positions)]


@pytest.mark.parametrize("prefill_chunk,chunk", [(16, 4), (32, 7), (512, 64)])
def test_chunked_prefill_equals_one_forward(params, prefill_chunk, chunk):
    """Prefill chunks that split the prompt and the response, and position chunks with a padded tail."""
    rng = np.random.default_rng(1)
    prompt, response = rng.integers(0, 500, 21), rng.integers(0, 500, 70)
    positions = np.array([0, 1, 5, 15, 16, 17, 40, 63, 64, 69, 70])
    want = np.asarray(response_logprobs(params, CFG, prompt, response, positions))
    got = _streamed(params, prompt, response, positions, prefill_chunk, chunk)
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)


def test_streamed_scoring_rejects_bad_settings(params):
    with pytest.raises(ConfigError, match="power of two"):
        path_hidden(params, CFG, np.arange(3), np.arange(4), prefill_chunk=24)
    hidden, offset = path_hidden(params, CFG, np.arange(3), np.arange(4))
    with pytest.raises(ConfigError, match="positions"):
        next(chunk_logprobs(params, hidden, offset, np.array([0, 99])))


def _log_softmax(x):
    return x - np.logaddexp.reduce(x, axis=-1, keepdims=True)


def test_candidate_tokens_equal_the_host_threshold():
    """Thresholds on the device give the host path's candidates, probabilities and KLs."""
    rng = np.random.default_rng(2)
    positions, teachers, vocab, tau = 6, 3, 4096, 0.02
    logits = rng.normal(size=(1 + teachers, positions, vocab))
    logits[..., rng.integers(0, vocab, size=5)] += rng.uniform(3, 9, size=5)  # a few peaked tokens
    logits[:, 2] *= 0.0  # a flat row: no token passes
    logp, logq = _log_softmax(logits[0]), _log_softmax(logits[1:])
    found = candidate_tokens(jnp.asarray(logp, jnp.float32), jnp.asarray(logq, jnp.float32), tau)
    rows, cols = np.nonzero(found["keep"])
    host = Candidates.from_distributions(np.arange(positions), np.exp(logp), np.exp(logq), tau)
    assert len(host.node) > positions  # the check is not vacuous
    np.testing.assert_array_equal(rows, host.node)
    np.testing.assert_array_equal(found["token"][rows, cols], host.token)
    np.testing.assert_allclose(found["p"][rows, cols], host.p, rtol=1e-5)
    np.testing.assert_allclose(found["q"][:, rows, cols], host.q, rtol=1e-5)
    np.testing.assert_allclose(found["kl"][:, rows], host.kl, rtol=1e-4, atol=1e-6)


def _tree_of(policy, seed=3):
    """A skeleton over 4 sampled paths of ``policy`` (2 share a prefix)."""
    batch = policy.sample(np.zeros(1, np.int64), [np.zeros(0, np.int64)], 4, 8, 1.0, jax.random.key(seed))
    paths = [row[:n] for row, n in zip(batch.tokens, batch.lengths)]
    return RolloutTree.from_paths(paths, [True, False, True, False])


def _host_candidates(tree, student, prompt, teachers, tau):
    """The pre-streaming planner pass: full [M, V] distributions on the host."""
    p_full, q_full, nodes, seen = [], [[] for _ in teachers], [], set()
    for path in range(tree.num_paths):
        length = int(tree.path_length[path])
        path_nodes = tree.path_nodes[path, :length]
        fresh = [d for d in range(length) if int(path_nodes[d]) not in seen]
        if not fresh:
            continue
        response = tree.path_tokens[path, :length]
        nodes.extend(int(path_nodes[d]) for d in fresh)
        seen.update(nodes[-len(fresh):])
        p_full.append(np.exp(student.next_token_logprobs(prompt, response, np.array(fresh))))
        for t, teacher in enumerate(teachers):
            q_full[t].append(np.exp(teacher.policy.next_token_logprobs(teacher.prompt, response, np.array(fresh))))
    return Candidates.from_distributions(nodes, np.concatenate(p_full), np.stack([np.concatenate(q) for q in q_full]),
                                         tau)


def _assert_same_candidates(got, want, rtol=1e-5):
    np.testing.assert_array_equal(got.node, want.node)
    np.testing.assert_array_equal(got.token, want.token)
    np.testing.assert_allclose(got.p, want.p, rtol=rtol, atol=1e-9)
    np.testing.assert_allclose(got.q, want.q, rtol=rtol, atol=1e-9)
    np.testing.assert_allclose(got.kl, want.kl, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_skeleton_candidates_equal_the_host_path_on_exact_policy(chunk):
    policy = ExactPolicy(seed=4)
    teachers = [Teacher("tilt", policy.tilted_teacher(2.0), None), Teacher("noise", policy.noise_teacher(1.0), None)]
    tree = _tree_of(policy)
    want = _host_candidates(tree, policy, None, teachers, 0.02)
    _assert_same_candidates(skeleton_candidates(tree, policy, None, teachers, 0.02, chunk), want)


def test_skeleton_candidates_and_gathers_equal_the_host_path_on_a_flax_model(params):
    """A self teacher (the student's weights, another prompt) and an external one; V = 512."""
    other = init_params(CFG, jax.random.key(1), scale=0.3, norm_jitter=0.1)
    student = FlaxPolicy(params, CFG, (510, 511), prefill_chunk=16)
    prompt = np.arange(5, 12)
    teachers = [Teacher("self", student, np.arange(30, 52)), Teacher("ext", FlaxPolicy(other, CFG, (510, 511)), prompt)]
    rng = np.random.default_rng(5)
    tree = RolloutTree.from_paths([rng.integers(0, 500, 40), rng.integers(0, 500, 33)], [True, False])
    want = _host_candidates(tree, student, prompt, teachers, 0.004)
    assert len(want.node) > tree.num_nodes  # several candidates per node: the check is not vacuous
    _assert_same_candidates(skeleton_candidates(tree, student, prompt, teachers, 0.004, chunk=8), want, 1e-4)

    response = tree.path_tokens[0, :40]
    depths = [0, 7, 8, 9, 39]
    ids = rng.integers(0, 512, size=(len(depths), 4))
    got = _gathers(student, prompt, teachers, response, depths, ids, chunk=2)
    logp = student.next_token_logprobs(prompt, response, np.array(depths))
    for teacher, per in zip(teachers, got):
        logq = teacher.policy.next_token_logprobs(teacher.prompt, response, np.array(depths))
        for name, value in compare(logp, logq, ids).items():
            np.testing.assert_allclose(per[name], np.asarray(value), rtol=2e-4, atol=1e-6, err_msg=name)
