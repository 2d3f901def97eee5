"""FlaxPolicy: the Policy protocol on the Flax Qwen3 with the KV-cache engine."""

from __future__ import annotations

from typing import Iterator, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxalign.engine.sampling import padded_prompts, sample
from jaxalign.engine.scoring import (DEFAULT_PREFILL_CHUNK, chunk_logprobs, path_hidden, response_logprobs,
                                     token_logprobs)
from jaxalign.models.config import Qwen3Config
from jaxalign.models.qwen3 import Qwen3Params
from jaxalign.policy import SampleBatch


class FlaxPolicy:
    """A Qwen3 model behind the Policy protocol. Prefixes are response tokens after ``prompt``.

    ``max_new_bound``: the largest ``max_new_tokens`` of :meth:`sample`'s calls (the pipeline sets
    the response limit for the student). Calls near it share one compiled shape
    (:func:`jaxalign.engine.sampling.new_slots`).
    """

    def __init__(self, params: Qwen3Params, cfg: Qwen3Config, eos_token_ids: Sequence[int], *,
                 max_rows: int = 256, mesh: Optional[Mesh] = None, fork: bool = True,
                 prefill_chunk: int = DEFAULT_PREFILL_CHUNK, max_new_bound: int = 0):
        self.params, self.cfg = params, cfg
        self.vocab_size = cfg.vocab_size
        self.eos_token_ids = tuple(int(e) for e in eos_token_ids)
        self.max_rows, self.mesh, self.fork = max_rows, mesh, fork
        self.prefill_chunk = prefill_chunk
        self.max_new_bound = max_new_bound

    def sample(self, prompt: np.ndarray, prefixes: Sequence[np.ndarray], n, max_new_tokens: int,
               temperature: float, key: jax.Array) -> SampleBatch:
        prompt = np.asarray(prompt, np.int32).ravel()
        full = [np.concatenate([prompt, np.asarray(p, np.int32).ravel()]) for p in prefixes]
        return sample(self.params, self.cfg, full, n, max_new_tokens=max_new_tokens, key=key,
                      eos_ids=self.eos_token_ids, temperature=temperature, fork=self.fork,
                      max_rows=self.max_rows, mesh=self.mesh, max_new_bound=self.max_new_bound)

    def sample_prompts(self, prompts: Sequence[np.ndarray], n: int, max_new_tokens: int, temperature: float,
                       keys: "Sequence[jax.Array] | jax.Array", max_rows: Optional[int] = None) -> SampleBatch:
        """``n`` completions of each prompt, prompt i's under keys[i], batched in one :func:`sample` on
        at most ``max_rows`` decode rows (default: this policy's) (:func:`jaxalign.policy.sample_prompts`).

        Up to 8 prompts are padded to a power of two with copies of the first (their rows are
        dropped, :func:`~jaxalign.engine.sampling.padded_prompts`): the pre-pass's later rounds carry
        however many questions still need demonstrations, and each new count would otherwise compile
        a new sampler shape.
        """
        prompts = list(prompts)
        keys = keys if isinstance(keys, jax.Array) else jnp.stack(list(keys))  # [len(prompts)] typed keys
        padding = padded_prompts(len(prompts)) - len(prompts)
        if padding:
            keys = jnp.concatenate([keys, jnp.repeat(keys[:1], padding)])
        padded = [np.asarray(p, np.int32).ravel() for p in prompts + prompts[:1] * padding]
        batch = sample(self.params, self.cfg, padded,
                       n, max_new_tokens=max_new_tokens, key=keys,
                       eos_ids=self.eos_token_ids, temperature=temperature, fork=self.fork,
                       max_rows=max_rows or self.max_rows, mesh=self.mesh)
        real = len(prompts) * n
        return SampleBatch(batch.tokens[:real], batch.lengths[:real], batch.prefix_index[:real])

    def next_token_logprobs(self, prompt: np.ndarray, response: np.ndarray, positions: np.ndarray) -> np.ndarray:
        return np.asarray(response_logprobs(self.params, self.cfg, prompt, response, positions))

    def logprob_chunks(self, prompt: np.ndarray, response: np.ndarray, positions: np.ndarray,
                       chunk: int) -> Iterator[jax.Array]:
        hidden, offset = path_hidden(self.params, self.cfg, prompt, response, self.prefill_chunk)
        return chunk_logprobs(self.params, hidden, offset, positions, chunk)

    def token_logprobs(self, prompt: np.ndarray, sequences: Sequence[np.ndarray]) -> list[np.ndarray]:
        return token_logprobs(self.params, self.cfg, prompt, sequences, self.prefill_chunk)
