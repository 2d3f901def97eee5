"""Trains the embedded toy student and teacher on toy_arith: ``python -m jaxalign.toy.train``.

Both are Qwen3-architecture models run by the same code as real Qwen3 (jaxalign.models), trained
from scratch with optax AdamW on a character-level tokenizer with Qwen3's chat template. The loss
covers the response tokens only.

* Student: 2 layers, d=64. Its training mixes plain prompts with two of the paper's teacher
  contexts (Figure 13 SELF-1C, Figure 15 SELF-SUM-1C), so that demonstrations in the prompt
  matter. SELF-1C1W (Figure 14) is left out of training, like any format the real student never
  saw; its pass rate is still measured. It stops as soon as its estimated temperature-1 exact-answer rate on plain prompts
  reaches ``--student-target``. That estimate is exp(-NLL of the reference response), free from
  the training loss. A fixed step count lands anywhere between 5% and 75%: the jump comes when the
  model learns to carry, and its timing varies with the seed.
* Teacher: the student grown by one layer (a third layer whose output projections start at zero,
  so it starts as exactly the student's function), then trained on plain prompts until
  ``--teacher-target`` or the time limit: larger and better, at a fraction of the cost of training
  a wider model from scratch on 2 cores (docs/benchmarks.md).

Batches hold a fixed token budget, so long context formats get proportionally fewer rows.

Afterwards both are scored by sampling (temperature 1, the real engine), and the checkpoints are
written in Hugging Face layout with a ``training.json`` that records the command, seed and figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxalign.contexts import ToyRuleSummarizer, self_1c, self_1c1w, self_sum_1c
from jaxalign.engine import sample
from jaxalign.models.config import Qwen3Config
from jaxalign.models.init import init_params
from jaxalign.models.loading import save_qwen3
from jaxalign.models.qwen3 import forward
from jaxalign.models.tokenizer import encode_chat
from jaxalign.tasks.toy_arith import ToyArith
from jaxalign.toy.tokenizer import build_char_tokenizer

log = logging.getLogger("jaxalign.toy.train")
FORMAT_MIX = {"plain": 0.7, "SELF-1C": 0.2, "SELF-SUM-1C": 0.1}


@dataclasses.dataclass(frozen=True)
class ModelSize:
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    mlp: int


STUDENT = ModelSize(layers=2, hidden=64, heads=4, kv_heads=2, mlp=192)
TEACHER = dataclasses.replace(STUDENT, layers=3)


def grow(params, cfg: Qwen3Config, key) -> tuple[Qwen3Config, object]:
    """Adds one layer on top whose attention output and MLP down projections are zero: the grown
    model computes exactly the same function, and training continues from there."""
    bigger = dataclasses.replace(cfg, num_layers=cfg.num_layers + 1)
    fresh = init_params(bigger, key, jnp.float32, scale=0.02).layers[-1]
    fresh = fresh.replace(attn=fresh.attn.replace(o=jnp.zeros_like(fresh.attn.o)), down=jnp.zeros_like(fresh.down))
    return bigger, params.replace(layers=params.layers + (fresh,))


def model_config(size: ModelSize, tokenizer) -> Qwen3Config:
    return Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=size.hidden, intermediate_size=size.mlp, num_layers=size.layers,
        num_heads=size.heads, num_kv_heads=size.kv_heads, head_dim=16, rope_theta=10000.0, rms_norm_eps=1e-6,
        tie_word_embeddings=True, max_position_embeddings=1024,
        # as Qwen3's generation config: <|im_end|> and <|endoftext|> both end a response
        eos_token_ids=tuple(tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")),
    )


def user_message(task: ToyArith, question, fmt: str, rng) -> str:
    correct = task.reference_response(question)
    if fmt == "plain":
        return question.user
    if fmt == "SELF-1C":
        return self_1c(question.user, correct)
    if fmt == "SELF-1C1W":
        wrong = task.reference_response(question, error_at=int(rng.integers(task.terms - 1)), rng=rng)
        return self_1c1w(question.user, correct, wrong)
    return self_sum_1c(question.user, ToyRuleSummarizer().summarize(question, correct))


def make_batch(task, tokenizer, rng, token_budget: int, fmt: str) -> tuple[np.ndarray, np.ndarray]:
    """tokens [B, L] int32 (right-padded) and loss mask [B, L] (1 on response tokens incl. EOS),
    with B * L close to ``token_budget`` (B is fixed per format, so shapes repeat)."""
    width_guess = {"plain": 96, "SELF-1C": 256, "SELF-SUM-1C": 224, "SELF-1C1W": 448}.get(fmt, 256)
    batch = max(8, token_budget // width_guess)
    questions = task.questions(batch, seed=int(rng.integers(2**31)))
    rows, masks = [], []
    for q in questions:
        prompt = encode_chat(tokenizer, user_message(task, q, fmt, rng))
        response = tokenizer(task.reference_response(q) + "<|im_end|>", add_special_tokens=False)["input_ids"]
        rows.append(prompt + response)
        masks.append([0] * len(prompt) + [1] * len(response))
    width = -(-max(map(len, rows)) // 32) * 32
    tokens = np.zeros((batch, width), np.int32)
    mask = np.zeros((batch, width), np.float32)
    for i, (r, m) in enumerate(zip(rows, masks)):
        tokens[i, : len(r)], mask[i, : len(m)] = r, m
    return tokens, mask


def make_train_step(cfg, optimizer):
    def loss_fn(params, tokens, mask):
        logp = jax.nn.log_softmax(forward(params, cfg, tokens[:, :-1]), axis=-1)
        nll = -jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0] * mask[:, 1:]
        per_example = nll.sum(-1)
        return nll.sum() / mask[:, 1:].sum(), per_example

    def step(params, opt_state, tokens, mask):
        (loss, per_example), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, tokens, mask)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, jnp.exp(-per_example).mean()

    return jax.jit(step, donate_argnums=(0, 1))


def train(cfg: Qwen3Config, params, tokenizer, task, *, seed: int, formats: dict, target: float,
          max_seconds: float, min_steps: int, token_budget: int, lr: float) -> tuple:
    optimizer = optax.chain(optax.clip_by_global_norm(1.0),
                            optax.adamw(optax.linear_schedule(0.0, lr, 50), weight_decay=0.01))
    opt_state = optimizer.init(params)
    step_fn = make_train_step(cfg, optimizer)
    rng = np.random.default_rng(seed)
    names, probs = list(formats), np.array(list(formats.values()))
    start, step, estimate, history = time.time(), 0, 0.0, []
    while True:
        fmt = names[rng.choice(len(names), p=probs / probs.sum())]
        tokens, mask = make_batch(task, tokenizer, rng, token_budget, fmt)
        params, opt_state, loss, exact_rate = step_fn(params, opt_state, tokens, mask)
        step += 1
        if fmt == "plain":
            estimate = 0.8 * estimate + 0.2 * float(exact_rate) if step > 1 else float(exact_rate)
        if step % 20 == 0:
            history.append({"step": step, "seconds": round(time.time() - start, 1), "loss": float(loss),
                            "plain_exact_rate_estimate": round(estimate, 4)})
            log.info("step %d  %.0fs  loss %.4f  est. pass %.3f", step, time.time() - start, float(loss), estimate)
            if step >= min_steps and estimate >= target:
                break
        if time.time() - start > max_seconds:
            log.warning("time limit reached at step %d with estimate %.3f", step, estimate)
            break
    return cfg, params, {"steps": step, "seconds": round(time.time() - start, 1), "estimate": estimate,
                         "history": history}


def pass_rate(params, cfg, tokenizer, task, fmt: str, n: int, seed: int) -> float:
    """Measured pass rate at temperature 1: one sample for each of n fresh questions."""
    rng = np.random.default_rng(seed)
    questions = task.questions(n, seed=10_000 + seed)
    prompts = [np.array(encode_chat(tokenizer, user_message(task, q, fmt, rng))) for q in questions]
    out = sample(params, cfg, prompts, 1, max_new_tokens=64, key=jax.random.key(seed), eos_ids=cfg.eos_token_ids)
    wins = [task.grade(q, tokenizer.decode([t for t in row[:n_] if t not in cfg.eos_token_ids]))
            for q, row, n_ in zip(questions, out.tokens, out.lengths)]
    return float(np.mean(wins))


def finish(name, cfg, params, stats, size, formats, args, argv, tokenizer, task, out: Path) -> None:
    """Measures pass rates by sampling and writes the checkpoint, tokenizer and training.json."""
    fmts = ["plain", "SELF-1C", "SELF-1C1W", "SELF-SUM-1C"] if name == "student" else ["plain"]
    rates = {fmt: pass_rate(params, cfg, tokenizer, task, fmt, args.eval, seed=1) for fmt in fmts}
    log.info("%s: pass rates at temperature 1: %s", name, rates)
    target_dir = out / name
    save_qwen3(params, cfg, target_dir)
    tokenizer.save_pretrained(str(target_dir))
    record = {
        "command": "python -m jaxalign.toy.train " + " ".join(argv if argv is not None else sys.argv[1:]),
        "seed": args.seed, "model": dataclasses.asdict(size), "formats": formats,
        "params": int(sum(x.size for x in jax.tree.leaves(params))),
        "pass_rate_temperature_1": rates, "eval_questions": args.eval, **stats,
    }
    (target_dir / "training.json").write_text(json.dumps(record, indent=1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "assets" / "toy"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--student-target", type=float, default=0.45)
    ap.add_argument("--teacher-target", type=float, default=0.97)
    ap.add_argument("--student-seconds", type=float, default=660)
    ap.add_argument("--teacher-seconds", type=float, default=240)
    ap.add_argument("--token-budget", type=int, default=8192, help="tokens per training batch")
    ap.add_argument("--eval", type=int, default=400, help="questions sampled to measure pass rates")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s", datefmt="%H:%M:%S")
    out = Path(args.out)
    task = ToyArith()
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = build_char_tokenizer(tmp)
    cfg = model_config(STUDENT, tokenizer)
    params = init_params(cfg, jax.random.key(args.seed), jnp.float32, scale=0.02)
    common = dict(seed=args.seed, min_steps=200, token_budget=args.token_budget, lr=3e-3)
    cfg, params, stats = train(cfg, params, tokenizer, task, formats=FORMAT_MIX, target=args.student_target,
                               max_seconds=args.student_seconds, **common)
    finish("student", cfg, params, stats, STUDENT, FORMAT_MIX, args, argv, tokenizer, task, out)
    cfg, params = grow(params, cfg, jax.random.key(args.seed + 1))
    teacher_formats = {"plain": 1.0}
    cfg, params, stats = train(cfg, params, tokenizer, task, formats=teacher_formats, target=args.teacher_target,
                               max_seconds=args.teacher_seconds, **{**common, "seed": args.seed + 1})
    finish("teacher", cfg, params, stats, TEACHER, teacher_formats, args, argv, tokenizer, task, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
