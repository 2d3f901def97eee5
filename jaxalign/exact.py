"""ExactPolicy: a synthetic tabular language model whose success probabilities are known exactly.

The student's next-token distribution is a seeded, deterministic function of the response prefix;
success is a deterministic function of the finished sequence. So the exact P_succ of every node
follows by enumeration with memoization, and every estimate the pipeline makes can be compared
with the truth. Teachers with a known sign of alignment are built from it:

* ``tilted_teacher(beta)``: q(k|u) ∝ p(k|u) exp(beta (P_succ(u+k) - P_succ(u))). beta > 0 pushes
  toward success (positive alignment), beta < 0 away from it (negative alignment).
* ``noise_teacher(sigma)``: q(k|u) ∝ p(k|u) exp(sigma ε_k(u)), ε ~ N(0, 1) seeded by the prefix,
  independent of success (alignment 0 in expectation, by the symmetry ε -> -ε).

Token ids: 0 .. vocab_size-2 are ordinary tokens, ``vocab_size - 1`` is EOS. A sequence that
reaches ``max_len`` tokens without EOS is finished (truncated) and graded as it is.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign.errors import JaxalignError
from jaxalign.policy import SampleBatch

Prefix = tuple[int, ...]


def _uniform(seed: int, tag: bytes, prefix: Prefix) -> float:
    """A uniform [0, 1) number that is a fixed function of (seed, tag, prefix)."""
    digest = hashlib.blake2b(repr((seed, prefix)).encode() + tag, digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


def _normals(seed: int, tag: int, prefix: Prefix, size: int) -> np.ndarray:
    return np.random.default_rng([seed, tag, len(prefix), *prefix]).normal(size=size)


def _as_prefix(tokens: Sequence[int]) -> Prefix:
    """A hashable prefix of Python ints. numpy integers must not leak in: the success hash reads
    ``repr``, and repr(np.int64(4)) != repr(4) would give one sequence two outcomes."""
    return tuple(map(int, tokens))


def numpy_rng(key: jax.Array) -> np.random.Generator:
    """A numpy Generator seeded from a JAX PRNG key (typed or raw uint32)."""
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return np.random.default_rng(np.asarray(key).ravel().tolist())


class TabularPolicy:
    """A policy given by a function prefix -> logits over a small vocabulary. Implements Policy."""

    def __init__(self, vocab_size: int, max_len: int, logits_fn: Callable[[Prefix], np.ndarray]):
        if vocab_size < 2 or max_len < 1:
            raise JaxalignError(f"vocab_size={vocab_size} (>= 2) and max_len={max_len} (>= 1) required")
        self.vocab_size = vocab_size
        self.max_len = max_len
        self.eos = vocab_size - 1
        self.eos_token_ids = (self.eos,)
        self._logits_fn = logits_fn
        self._logprobs: dict[Prefix, np.ndarray] = {}

    def is_finished(self, prefix: Prefix) -> bool:
        return len(prefix) >= self.max_len or (len(prefix) > 0 and prefix[-1] == self.eos)

    def logprobs(self, prefix: Prefix) -> np.ndarray:
        """log P(. | prefix), [V] float64 (memoized)."""
        prefix = _as_prefix(prefix)
        found = self._logprobs.get(prefix)
        if found is None:
            if self.is_finished(prefix):
                raise JaxalignError(f"prefix {prefix} is already finished; it has no next token")
            logits = np.asarray(self._logits_fn(prefix), np.float64)
            found = logits - np.logaddexp.reduce(logits)
            self._logprobs[prefix] = found
        return found

    def probs(self, prefix: Prefix) -> np.ndarray:
        return np.exp(self.logprobs(prefix))

    def sample(self, prompt, prefixes: Sequence[np.ndarray], n: int | Sequence[int], max_new_tokens: int,
               temperature: float, key: jax.Array) -> SampleBatch:
        """Completions to EOS, ``max_len`` or ``max_new_tokens``; temperature 0 means greedy.
        The prompt is implicit in a tabular policy and ignored."""
        counts = [int(n)] * len(prefixes) if np.ndim(n) == 0 else [int(c) for c in n]
        if len(counts) != len(prefixes):
            raise JaxalignError(f"{len(prefixes)} prefixes but {len(counts)} counts")
        rng = numpy_rng(key)
        rows = [tuple(int(t) for t in p) for p, c in zip(prefixes, counts) for _ in range(c)]
        out = np.full((len(rows), max_new_tokens), -1, np.int64)
        lengths = np.zeros(len(rows), np.int64)
        for b, prefix in enumerate(rows):
            seq = prefix
            uniforms = rng.random(max_new_tokens)
            for t in range(max_new_tokens):
                if self.is_finished(seq):
                    break
                logp = self.logprobs(seq)
                if temperature == 0:
                    tok = int(np.argmax(logp))
                else:
                    probs = np.exp((logp - logp.max()) / temperature)
                    cdf = np.cumsum(probs / probs.sum())
                    tok = int(min(np.searchsorted(cdf, uniforms[t], side="right"), self.vocab_size - 1))
                out[b, t] = tok
                seq = seq + (tok,)
            lengths[b] = len(seq) - len(prefix)
        index = np.repeat(np.arange(len(prefixes)), counts)
        return SampleBatch(tokens=out, lengths=lengths, prefix_index=index)

    def next_token_logprobs(self, prompt, response, positions) -> np.ndarray:
        """[len(positions), V] float32. The prompt is implicit in a tabular policy and ignored."""
        response = tuple(int(t) for t in response)
        return np.stack([self.logprobs(response[:pos]) for pos in positions]).astype(np.float32)

    def logprob_chunks(self, prompt, response, positions, chunk: int):
        """:meth:`next_token_logprobs` in device chunks of [chunk, V] float32, the last padded."""
        positions = np.asarray(positions, np.int64).ravel()
        for first in range(0, len(positions), chunk):
            piece = positions[first: first + chunk]
            piece = np.concatenate([piece, np.full(chunk - len(piece), piece[-1])])
            yield jnp.asarray(self.next_token_logprobs(prompt, response, piece))

    def token_logprobs(self, prompt, sequences) -> list[np.ndarray]:
        """log P(seq[t] | seq[:t]) for every t: [len(seq)] float32 per sequence (prompt implicit)."""
        out = []
        for seq in sequences:
            seq = tuple(int(t) for t in np.asarray(seq).ravel())
            out.append(np.array([self.logprobs(seq[:t])[tok] for t, tok in enumerate(seq)], np.float32))
        return out


class ExactPolicy(TabularPolicy):
    """The student: seeded random logits per prefix, a seeded success function, exact P_succ."""

    def __init__(self, seed: int = 0, vocab_size: int = 5, max_len: int = 8, logit_scale: float = 1.5,
                 eos_bias: float = -1.5, eos_slope: float = 0.5, outcome_scale: float = 0.2):
        self.seed = seed
        self._eos_bias, self._eos_slope, self._scale = eos_bias, eos_slope, logit_scale
        # success threshold = clip(0.5 + Σ_t table[t, token_t], 0.03, 0.97): every choice matters a bit
        table = np.random.default_rng([seed, 7]).normal(size=(max_len, vocab_size)) * outcome_scale
        self._outcome_rows = table.tolist()
        self._p_succ: dict[Prefix, float] = {}
        super().__init__(vocab_size, max_len, self._student_logits)

    def _student_logits(self, prefix: Prefix) -> np.ndarray:
        logits = _normals(self.seed, 1, prefix, self.vocab_size) * self._scale
        logits[self.eos] += self._eos_bias + self._eos_slope * len(prefix)
        return logits

    def is_success(self, seq: Sequence[int]) -> bool:
        seq = _as_prefix(seq)
        threshold = 0.5 + sum(self._outcome_rows[t][tok] for t, tok in enumerate(seq))
        return _uniform(self.seed, b"success", seq) < min(max(threshold, 0.03), 0.97)

    def grade(self, prefix: Sequence[int], batch: SampleBatch) -> np.ndarray:
        """Success of each completed row of ``batch`` (continuing ``prefix``): [B] bool."""
        prefix = tuple(int(t) for t in prefix)
        return np.array([self.is_success(prefix + tuple(row[:n])) for row, n in zip(batch.tokens, batch.lengths)])

    def success_prob(self, prefix: Sequence[int]) -> float:
        """Exact P(success | prefix) under this student at temperature 1."""
        prefix = _as_prefix(prefix)
        found = self._p_succ.get(prefix)
        if found is None:
            if self.is_finished(prefix):
                found = float(self.is_success(prefix))
            else:
                probs = self.probs(prefix)
                found = float(sum(probs[k] * self.success_prob(prefix + (k,)) for k in range(self.vocab_size)))
            self._p_succ[prefix] = found
        return found

    def child_success_probs(self, prefix: Sequence[int]) -> np.ndarray:
        """Exact P_succ after each next token: [V] float64."""
        prefix = tuple(int(t) for t in prefix)
        return np.array([self.success_prob(prefix + (k,)) for k in range(self.vocab_size)])

    def expected_return(self, teacher: TabularPolicy, prefix: Sequence[int], memo: dict | None = None) -> float:
        """Exact E[Σ_{t' >= t} (log q - log p)(o_t') | prefix] under the student: MiniLLM's
        reward-to-go from ``prefix``, by enumeration. Pass one ``memo`` dict per teacher to reuse."""
        prefix = _as_prefix(prefix)
        memo = {} if memo is None else memo
        if self.is_finished(prefix):
            return 0.0
        found = memo.get(prefix)
        if found is None:
            logp, logq = self.logprobs(prefix), teacher.logprobs(prefix)
            found = float(sum(np.exp(logp[k]) * (logq[k] - logp[k] + self.expected_return(teacher, prefix + (k,), memo))
                              for k in range(self.vocab_size)))
            memo[prefix] = found
        return found

    def tilted_teacher(self, beta: float) -> TabularPolicy:
        """A teacher tilted toward success (beta > 0) or away from it (beta < 0)."""

        def logits(prefix: Prefix) -> np.ndarray:
            return self.logprobs(prefix) + beta * (self.child_success_probs(prefix) - self.success_prob(prefix))

        return TabularPolicy(self.vocab_size, self.max_len, logits)

    def noise_teacher(self, sigma: float, seed: int = 1) -> TabularPolicy:
        """A teacher that perturbs the student with success-independent noise."""

        def logits(prefix: Prefix) -> np.ndarray:
            return self.logprobs(prefix) + sigma * _normals(self.seed * 1000 + seed, 2, prefix, self.vocab_size)

        return TabularPolicy(self.vocab_size, self.max_len, logits)
