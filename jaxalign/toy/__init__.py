"""The embedded toy default: tokenizer, task and tiny trained Qwen3-architecture models."""
