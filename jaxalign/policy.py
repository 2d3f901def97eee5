"""The Policy protocol: anything that can sample completions and score next-token distributions.

The pipeline talks only to this protocol. Two families implement it: FlaxPolicy (Qwen3 with the
KV-cache engine) and :class:`jaxalign.exact.TabularPolicy` (a synthetic LM with exact answers).
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Optional, Protocol, Sequence

import jax
import numpy as np


@dataclasses.dataclass(frozen=True)
class SampleBatch:
    """Completions of several prefixes.

    tokens: [B, T] int64 new tokens after each prefix, padded with -1 past ``lengths``.
    lengths: [B] int64 number of valid tokens (including the EOS, if one was reached).
    prefix_index: [B] int64 which input prefix each row continues.
    """

    tokens: np.ndarray
    lengths: np.ndarray
    prefix_index: np.ndarray


class Policy(Protocol):
    vocab_size: int
    eos_token_ids: tuple[int, ...]

    def sample(
        self, prompt: np.ndarray, prefixes: Sequence[np.ndarray], n: int | Sequence[int],
        max_new_tokens: int, temperature: float, key: jax.Array,
    ) -> SampleBatch:
        """``n`` (or n[i]) completions of prompt + each response prefix, to EOS or the limit.

        prompt: [Lp] int token ids of the rendered chat prompt; prefixes: response-token prefixes.
        temperature 0 means greedy. Row r's tokens depend only on (key, r), never on its neighbours.
        """
        ...

    def next_token_logprobs(self, prompt: np.ndarray, response: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """log P(. | prompt + response[:pos]) for each pos in ``positions``: [len(positions), V] float32.

        The whole [M, V] array: fine for small vocabularies and tests; the pipeline uses
        :meth:`logprob_chunks`, which never brings a vocabulary-sized array to the host.
        """
        ...

    def logprob_chunks(self, prompt: np.ndarray, response: np.ndarray, positions: np.ndarray,
                       chunk: int) -> Iterator[jax.Array]:
        """The same log-probs as device arrays of [chunk, V] float32, ``chunk`` positions at a time.

        The last chunk is padded by repeating the last position. The path is run through the model
        once, whatever the number of chunks.
        """
        ...

    def token_logprobs(self, prompt: np.ndarray, sequences: Sequence[np.ndarray]) -> list[np.ndarray]:
        """log P(seq[t] | prompt + seq[:t]) for every t of each sequence: a [len(seq)] float32 array each.

        The log-probs of the tokens taken (MiniLLM's reward-to-go), for many sequences at once.
        """
        ...


def sample_prompts(policy: Policy, prompts: Sequence[np.ndarray], n: int, max_new_tokens: int, temperature: float,
                   keys: "Sequence[jax.Array] | jax.Array", max_rows: Optional[int] = None) -> SampleBatch:
    """``n`` completions of each of several prompts, prompt i's under ``keys[i]``: what
    ``policy.sample(prompts[i], [[]], n, max_new_tokens, temperature, keys[i])`` draws, one prompt
    after the other in the rows. A policy with a ``sample_prompts`` method (FlaxPolicy) batches the
    prompts into one engine ``sample`` (calls of several prompts each, on at most ``max_rows`` decode
    rows; default: the policy's own limit), so each decode step reads the weights once for several
    prompts; others make one call per prompt. ``keys``: a sequence of keys, or a [len(prompts)]
    typed key array. Rows' ``prefix_index`` is the prompt's index."""
    if hasattr(policy, "sample_prompts"):
        return policy.sample_prompts(prompts, n, max_new_tokens, temperature, keys, max_rows)
    empty = [np.zeros(0, np.int32)]
    batches = [policy.sample(prompt, empty, n, max_new_tokens, temperature, key) for prompt, key in zip(prompts, keys)]
    width = max([b.tokens.shape[1] for b in batches], default=max_new_tokens)
    tokens = [np.pad(b.tokens, ((0, 0), (0, width - b.tokens.shape[1])), constant_values=-1) for b in batches]
    return SampleBatch(np.concatenate(tokens) if tokens else np.zeros((0, width), np.int64),
                       np.concatenate([b.lengths for b in batches]) if batches else np.zeros(0, np.int64),
                       np.repeat(np.arange(len(batches)), [len(b.lengths) for b in batches]))
