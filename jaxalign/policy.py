"""The Policy protocol: anything that can sample completions and score next-token distributions.

The pipeline talks only to this protocol. Two families implement it: FlaxPolicy (Qwen3 with the
KV-cache engine) and :class:`jaxalign.exact.TabularPolicy` (a synthetic LM with exact answers).
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Protocol, Sequence

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
