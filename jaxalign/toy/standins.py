"""Stand-in checkpoints under the real hub names: ``python -m jaxalign.toy.standins DIR [--vocab toy|qwen]``.

Writes ``DIR/Qwen/Qwen3-0.6B``, ..., ``DIR/Qwen/Qwen3-32B``: tiny Qwen3 checkpoints (1 layer,
width 64, all of one shape) with the embedded toy tokenizer (or, with ``--vocab qwen``, a Qwen-vocabulary tokenizer
of V = 151,936 for tests at the real vocabulary size). With ``model_root=DIR`` every hub id of a
config resolves to them, so ``student=qwen3-0.6b teachers=paper8 dataset=boolq`` runs end to end
on a CPU in seconds. Each directory holds a ``standin.json`` marker, and a job that loads one says
that its numbers mean nothing.

The weights are random, plus one fixed part so that graders see both outcomes: a token bigram
written into the embedding and the LM head makes every model answer in the paper's format,
``answer: VALUE``, with VALUE drawn from True/False/Yes/No, A-D and a few integers (optionally after
a few ``ok,`` lines). So BoolQ, MMLU and AIME questions get correct and wrong rollouts and
demonstrations, and their trees branch. The random layers on top make each model's distribution
depend on its prompt (a teacher's context changes it) and differ from model to model.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import jax.numpy as jnp
import numpy as np

log = logging.getLogger("jaxalign.toy.standins")

TOY_TOKENIZER = Path(__file__).resolve().parents[1] / "assets" / "toy" / "student"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json",
                   "vocab.json", "merges.txt", "added_tokens.json")
MARKER = "standin.json"


# The real names. All share one shape, so that jit compiles each kernel once for all of them: a
# paper8 job on stand-ins then takes seconds, not the minutes of six models' compilations.
MODELS = ("Qwen/Qwen3-0.6B", "Qwen/Qwen3-1.7B", "Qwen/Qwen3-4B", "Qwen/Qwen3-8B", "Qwen/Qwen3-14B",
          "Qwen/Qwen3-32B")
LAYERS, HIDDEN, MLP, HEADS, KV_HEADS, HEAD_DIM = 1, 64, 64, 2, 1, 16
VALUES = {  # answer values and their total probability; each group's values share it equally
    ("TRUE", "FALSE", "YES", "NO"): 0.4,
    ("A", "B", "C", "D"): 0.4,
    ("1", "4", "29", "70", "358"): 0.2,
}
PREFIX = "ok,\n"  # an optional line before the answer: a second branching point
PREFIX_SHARE = 0.3
UNSEEN_MARGIN = 5.5  # a transition the chain never makes: log-prob -(log V + this), ~0.4% of the mass in all
CONTEXT_SCALE = 0.05  # init scale of the random layers: how much the prompt moves the distribution
HEAD_NOISE = 4.0  # scale of the head rows that read the random layers' output
STATE_NORM = 2.0  # the chain state's embedding norm: larger keeps the layers' share of the residual small


def answer_chain(tokenizer, start: int, eos: int) -> dict[int, dict[int, float]]:
    """Token transition probabilities of the answer texts, from ``start`` (the generation prompt's
    last token) to ``eos``: {token: {next token: probability}}."""
    counts: dict[int, dict[int, float]] = {}
    for values, share in VALUES.items():
        for value in values:
            for prefix, weight in (("", 1 - PREFIX_SHARE), (PREFIX, PREFIX_SHARE)):
                ids = tokenizer(f"{prefix}answer: {value}", add_special_tokens=False)["input_ids"]
                chain = [start, *ids, eos]
                for a, b in zip(chain, chain[1:]):
                    counts.setdefault(a, {})
                    counts[a][b] = counts[a].get(b, 0.0) + share * weight / len(values)
    return {a: {b: w / sum(nxt.values()) for b, w in nxt.items()} for a, nxt in counts.items()}


def standin_params(cfg, chain: dict[int, dict[int, float]], seed: int):
    """Random Qwen3 params (einsum layout, float32 numpy) whose embedding and head carry ``chain``.

    Token i of the chain owns hidden direction k_i (one-hot embedding); head row k_i holds the
    chain's log-probabilities from it. Other tokens live in the remaining directions. The random
    layers write only to those remaining directions, so the chain's state is never blurred; the
    random head rows there turn what attention read from the prompt into a logit offset.
    """
    from jaxalign.models.qwen3 import Attention, Layer, Qwen3Params

    states = sorted(set(chain) | {b for nxt in chain.values() for b in nxt})
    d, v, n = cfg.hidden_size, cfg.vocab_size, len(states)
    if n > d - 8:
        raise ValueError(f"the answer chain has {n} tokens; it needs hidden_size > {n + 8}")
    rng = np.random.default_rng(seed)

    def normal(*shape, writes_residual=False):
        w = rng.normal(0, CONTEXT_SCALE, shape).astype(np.float32)
        if writes_residual:
            w[..., :n] = 0.0  # the layers never touch the chain's directions
        return w

    heads, kv, h, f = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.intermediate_size
    layers = tuple(
        Layer(attn_norm=np.ones(d, np.float32), mlp_norm=np.ones(d, np.float32), gate=normal(d, f), up=normal(d, f),
              down=normal(f, d, writes_residual=True),
              attn=Attention(q=normal(d, heads, h), k=normal(d, kv, h), v=normal(d, kv, h),
                             o=normal(heads, h, d, writes_residual=True), q_norm=np.ones(h, np.float32),
                             k_norm=np.ones(h, np.float32)))
        for _ in range(cfg.num_layers))
    embed = np.zeros((v, d), np.float32)
    embed[:, n:] = rng.normal(0, 1 / np.sqrt(d - n), (v, d - n))
    head = np.zeros((d, v), np.float32)
    head[n:] = rng.normal(0, HEAD_NOISE / np.sqrt(d), (d - n, v))
    for k, token in enumerate(states):
        embed[token] = 0.0
        embed[token, k] = STATE_NORM
        logits = np.full(v, -(np.log(v) + UNSEEN_MARGIN), np.float32)
        for nxt, p in chain.get(token, {}).items():
            logits[nxt] = np.log(p)
        head[k] = logits / np.sqrt(d)
    return Qwen3Params(embed=embed, layers=layers, final_norm=np.ones(d, np.float32), lm_head=head)


def _tokenizer(vocab: str, work: Path):
    """The tokenizer directory to copy into every stand-in, the loaded tokenizer and the vocabulary size."""
    from jaxalign.models import load_tokenizer

    if vocab == "toy":
        tokenizer = load_tokenizer(TOY_TOKENIZER)
        return TOY_TOKENIZER, tokenizer, len(tokenizer)
    try:
        from jaxalign.toy.qwen_tokenizer import QWEN3_VOCAB_SIZE, build_qwen_tokenizer
    except ImportError as err:
        raise ValueError(f"--vocab qwen needs jaxalign.toy.qwen_tokenizer (build_qwen_tokenizer): {err}") from err
    out = work / "qwen_tokenizer"
    build_qwen_tokenizer(out)
    return out, load_tokenizer(out), QWEN3_VOCAB_SIZE


def write_standins(root: str | Path, vocab: str = "toy", models: Optional[Sequence[str]] = None,
                   seed: int = 0) -> list[Path]:
    """Writes the stand-ins under ``root`` (``root/Qwen/Qwen3-0.6B`` ...); returns their directories."""
    from jaxalign.models.config import Qwen3Config
    from jaxalign.models.loading import save_qwen3
    from jaxalign.models.tokenizer import encode_chat

    root = Path(root)
    names = list(models or MODELS)
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        raise ValueError(f"no stand-in for {unknown}; known: {list(MODELS)}")
    with tempfile.TemporaryDirectory() as work:
        source, tokenizer, vocab_size = _tokenizer(vocab, Path(work))
        eos = tuple(tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>"))
        start = encode_chat(tokenizer, "?")[-1]
        chain = answer_chain(tokenizer, start, eos[0])
        out = []
        for i, name in enumerate(names):
            cfg = Qwen3Config(vocab_size=vocab_size, hidden_size=HIDDEN, intermediate_size=MLP,
                              num_layers=LAYERS, num_heads=HEADS, num_kv_heads=KV_HEADS, head_dim=HEAD_DIM,
                              rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=False,
                              max_position_embeddings=16384, eos_token_ids=eos)
            model_seed = seed * 1000 + MODELS.index(name)
            target = root / name
            if target.exists():
                shutil.rmtree(target)
            save_qwen3(standin_params(cfg, chain, model_seed), cfg, target,
                       dtype=jnp.bfloat16 if vocab == "qwen" else jnp.float32)
            for file in TOKENIZER_FILES:
                if (source / file).is_file():
                    shutil.copy(source / file, target / file)
            (target / MARKER).write_text(json.dumps({
                "standin": True, "hub_id": name, "seed": model_seed, "vocab": vocab,
                "written_by": "python -m jaxalign.toy.standins",
                "note": "random weights with a fixed answer-writing bigram; results computed with it mean nothing",
            }, indent=1))
            out.append(target)
            log.info("wrote %s (%d of %d)", target, i + 1, len(names))
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxalign.toy.standins", description=__doc__.split("\n")[0])
    parser.add_argument("dir", help="the model root: stand-ins go to DIR/Qwen/Qwen3-0.6B etc.")
    parser.add_argument("--vocab", choices=("toy", "qwen"), default="toy",
                        help="toy: the embedded 101-token tokenizer (default); qwen: V = 151,936 (tests)")
    parser.add_argument("--models", nargs="+", default=None, help=f"a subset of {', '.join(MODELS)}")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        dirs = write_standins(args.dir, args.vocab, args.models, args.seed)
    except ValueError as err:
        print(f"standins: {err}", file=sys.stderr)
        return 2
    print(f"wrote {len(dirs)} stand-ins under {args.dir}; use model_root={args.dir}. Their results mean nothing.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
