"""Sampling and scoring engine on the Flax Qwen3: KV-cache decode, prefix forking, teacher scoring."""

from jaxalign.engine.sampling import COMPILES, bucket, sample

__all__ = ["COMPILES", "bucket", "sample"]
