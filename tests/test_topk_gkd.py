"""Top-k GKD (GKD over the student's top-k tokens plus one tail bucket) under both conventions.

The NumPy references build each gradient from the softmax Jacobian of the bucketed KL, not from
the closed form of jaxalign.gradients: with categories c (each top-k token alone, the rest one
tail), dKL_b/dp_i = log(P_c(i)/Q_c(i)) + 1 and the logit gradient is J^T of that, J = diag(p) - pp^T.
"""

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from jaxalign import config as C
from jaxalign.algorithms import alignments
from jaxalign.alignment import NodeBatch, bucket_stats, student_topk
from jaxalign.errors import ConfigError
from jaxalign.exact import ExactPolicy
from jaxalign.pipeline.phase2 import compare_topk, score_paths
from tests.exact_helpers import build_tree

CONF = str(Path(__file__).resolve().parents[1] / "conf")
N_SIG = 20


def jacobian(p):
    """d p_k / d z_j = p_k (δ_kj - p_j), as a [k, j] matrix."""
    return np.diag(p) - np.outer(p, p)


def bucketed_kl_gradient(p, q, top):
    """-(d KL_b / d z) over the tokens of p, q ([n] float64), where ``top`` [n] bool marks the
    tokens that are their own category; the others form one tail bucket."""
    tail = ~top
    p_tail, q_tail = p[tail].sum(), q[tail].sum()
    d_kl = np.where(top, np.log(p) - np.log(q), np.log(max(p_tail, 1e-300)) - np.log(max(q_tail, 1e-300))) + 1.0
    return -(jacobian(p).T @ d_kl)


def reference(p_full, q_full, columns, in_s, s, node_success, k, convention):
    """(ideal, top-k GKD) gradients over the K columns, 0 off S_u, in float64 from full distributions."""
    top_ids = np.argsort(-p_full, kind="stable")[:k]
    is_top = np.isin(np.arange(len(p_full)), top_ids)
    ideal, grad = np.zeros(len(columns)), np.zeros(len(columns))
    idx = np.flatnonzero(in_s)
    if convention == "renormalized":
        pt = p_full[columns[idx]] / p_full[columns[idx]].sum()
        qt = q_full[columns[idx]] / q_full[columns[idx]].sum()
        ideal[idx] = jacobian(pt).T @ s[idx]
        grad[idx] = bucketed_kl_gradient(pt, qt, is_top[columns[idx]])
    else:
        ideal[idx] = p_full[columns[idx]] * (s[idx] - node_success)
        grad[idx] = bucketed_kl_gradient(p_full, q_full, is_top)[columns[idx]]
    return ideal, grad


def cosine(a, b):
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return (a @ b / (na * nb)) if na > 1e-10 and nb > 1e-10 else np.nan


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("k", [1, 4, 12, 30])
@pytest.mark.parametrize("convention", ["renormalized", "paper"])
def test_registered_topk_gkd_equals_the_jacobian_of_the_bucketed_kl(k, convention):
    """The registered algorithm on a batch filled from the on-device statistics (V = 12), against
    NumPy; at k >= V it equals full GKD under the same convention."""
    rng = np.random.default_rng(k)
    n, vocab, width = 16, 12, 6
    z_p = rng.normal(size=(n, vocab)) * 2.0
    z_q = z_p + rng.normal(size=(n, vocab))
    logp = np.log(softmax(z_p)).astype(np.float32)
    logq = np.log(softmax(z_q)).astype(np.float32)
    p_full, q_full = np.exp(logp.astype(np.float64)), np.exp(logq.astype(np.float64))
    columns = np.stack([rng.permutation(vocab)[:width] for _ in range(n)])
    in_s = rng.uniform(size=(n, width)) < 0.8
    in_s[:, :2] = True
    s = rng.uniform(size=(n, width))
    node_success = rng.uniform(size=n)
    stats = {key: np.asarray(v) for key, v in topk_bucket_stats(logp, logq, k).items()}
    in_topk = np.stack([np.isin(columns[i], stats["topk_ids"][i]) for i in range(n)])
    batch = NodeBatch(p=np.take_along_axis(p_full, columns, 1), q=np.take_along_axis(q_full, columns, 1), s=s,
                      in_s=in_s, seen=np.ones((n, width), bool),
                      kl_full=(p_full * (np.log(p_full) - np.log(q_full))).sum(-1),
                      onp_visits=np.ones((n, width)), onp_successes=np.ones((n, width)), baseline=np.full(n, 0.5),
                      node_success=node_success, in_topk=in_topk, tail_log_ratio=stats["tail_log_ratio"],
                      kl_bucket=stats["kl_bucket"])
    got = alignments(batch, ("gkd", "topk_gkd"), convention)
    for i in range(n):
        ideal, want = reference(p_full[i], q_full[i], columns[i], in_s[i], s[i], node_success[i], k, convention)
        np.testing.assert_allclose(np.asarray(got["topk_gkd"]["grad"][i]), want, rtol=2e-4, atol=2e-6)
        np.testing.assert_allclose(float(got["topk_gkd"]["cosine"][i]), cosine(ideal, want), atol=1e-4)
    if k >= vocab:
        np.testing.assert_allclose(np.asarray(got["topk_gkd"]["grad"]), np.asarray(got["gkd"]["grad"]),
                                   rtol=1e-4, atol=1e-6)
    else:  # the buckets matter: top-k GKD is not GKD here
        assert np.abs(np.asarray(got["topk_gkd"]["grad"]) - np.asarray(got["gkd"]["grad"])).max() > 1e-3


def topk_bucket_stats(logp, logq, k: int) -> dict:
    """The student's top-k ids and the tail bucket's statistics, as Phase 2 computes them. [N, V] -> numpy."""
    ids, mask = student_topk(jnp.asarray(logp), k)
    return {"topk_ids": ids, **bucket_stats(jnp.asarray(logp), jnp.asarray(logq), ids, mask)}

def test_topk_gkd_needs_in_topk_and_the_paper_convention_needs_the_bucket_statistics():
    p = np.array([[0.5, 0.3, 0.2]])
    batch = NodeBatch(p=p, q=p[:, ::-1], s=np.array([[1.0, 0.0, 0.5]]), in_s=np.ones((1, 3), bool),
                      seen=np.ones((1, 3), bool), kl_full=np.zeros(1), onp_visits=np.ones((1, 3)),
                      onp_successes=np.ones((1, 3)), baseline=np.full(1, 0.5), node_success=np.full(1, 0.5))
    assert "topk_gkd" not in alignments(batch, ("gkd", "topk_gkd"), "renormalized")
    with_topk = batch.replace(in_topk=np.array([[True, False, False]]))
    assert "topk_gkd" in alignments(with_topk, ("topk_gkd",), "renormalized")
    with pytest.raises(ValueError, match="tail_log_ratio and kl_bucket"):
        alignments(with_topk, ("topk_gkd",), "paper")


def test_on_device_bucket_statistics_at_a_real_vocabulary():
    """Phase 2's device reduction (student_topk once, compare_topk per teacher) at V = 151,936 against
    float64 NumPy: the top-k set, the columns' membership, the tail log-ratio and KL_b. The peaked rows
    have a tail far below float32's resolution of 1 - Σ_topk p; it keeps its relative precision."""
    rng = np.random.default_rng(7)
    vocab, k, width = 151_936, 20, 8
    scales = np.array([1.0, 3.0, 8.0, 16.0, 1.0])
    z_p = rng.normal(size=(len(scales), vocab)) * scales[:, None]
    z_q = z_p + rng.normal(size=z_p.shape) * np.array([0.5, 1.0, 2.0, 0.3, 0.0])[:, None]  # last: q = p
    logp = (z_p - np.logaddexp.reduce(z_p, axis=-1, keepdims=True)).astype(np.float32)
    logq = (z_q - np.logaddexp.reduce(z_q, axis=-1, keepdims=True)).astype(np.float32)
    lp, lq = logp.astype(np.float64), logq.astype(np.float64)
    top = np.argsort(-lp, axis=-1, kind="stable")[:, :k]
    # columns: three of the top-k, five outside it
    ids = np.concatenate([top[:, [0, 5, 19]], np.argsort(-lp, axis=-1)[:, [20, 100, 5000, 90000, -1]]], axis=1)
    top_ids, top_mask = student_topk(jnp.asarray(logp), k)
    got = {key: np.asarray(v) for key, v in compare_topk(jnp.asarray(logp), jnp.asarray(logq), jnp.asarray(ids),
                                                          top_ids, top_mask).items()}
    assert got["in_topk"].shape == (len(scales), width) and got["in_topk"].dtype == bool
    np.testing.assert_array_equal(np.sort(np.asarray(top_ids), axis=-1), np.sort(top, axis=-1))
    np.testing.assert_array_equal(got["in_topk"], np.arange(width)[None, :].repeat(len(scales), 0) < 3)
    is_top = np.zeros(lp.shape, bool)
    np.put_along_axis(is_top, top, True, axis=-1)
    log_p_tail = np.logaddexp.reduce(np.where(is_top, -np.inf, lp), axis=-1)
    log_q_tail = np.logaddexp.reduce(np.where(is_top, -np.inf, lq), axis=-1)
    tail = log_p_tail - log_q_tail
    p_top, q_top = np.take_along_axis(lp, top, -1), np.take_along_axis(lq, top, -1)
    kl_bucket = (np.exp(p_top) * (p_top - q_top)).sum(-1) + np.exp(log_p_tail) * tail
    assert np.exp(log_p_tail[3]) < 1e-8  # the peaked row's tail is below float32's 1 - Σ_topk resolution
    np.testing.assert_allclose(got["tail_log_ratio"], tail, rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(got["kl_bucket"], kl_bucket, rtol=1e-4, atol=1e-6)
    assert got["tail_log_ratio"][-1] == 0.0 and got["kl_bucket"][-1] == 0.0
    np.testing.assert_allclose(got["p_at"], np.exp(np.take_along_axis(lp, ids, -1)), rtol=1e-5, atol=1e-30)
    np.testing.assert_allclose(got["kl"], (np.exp(lp) * (lp - lq)).sum(-1), rtol=1e-3, atol=1e-5)


@pytest.fixture(scope="module")
def exact_question():
    policy = ExactPolicy(seed=3)
    built = build_tree(policy, seed=3, n_initial=600, n_min=40)
    teachers = [_Teacher("tilt", policy.tilted_teacher(3.0)), _Teacher("noise", policy.noise_teacher(1.0))]
    return built.tree, policy, teachers


class _Teacher:
    def __init__(self, name, policy):
        self.name, self.policy, self.prompt = name, policy, None


def _rows(exact_question, k):
    tree, policy, teachers = exact_question
    return score_paths("q", tree, policy, np.zeros(1, np.int64), teachers, N_SIG, 0.5, chunk=4,
                       algorithms=("gkd", "topk_gkd"), topk_k=k)


@pytest.mark.parametrize("k", [2, 5, 64])
def test_phase2_topk_rows_match_numpy_from_the_full_distributions(exact_question, k):
    """Phase 2's topk_gkd rows on ExactPolicy (V = 5) against NumPy from the exact p and q over the
    vocabulary, under both conventions; at k >= V the rows equal the gkd rows."""
    tree, policy, teachers = exact_question
    rows = _rows(exact_question, k)
    by_key = {(r["path"], r["node"], r["teacher"], r["convention"], r["algorithm"]): r for r in rows}
    teacher_policy = {t.name: t.policy for t in teachers}
    checked, outside_topk = 0, 0
    for (path, node, teacher, convention, algorithm), row in by_key.items():
        if algorithm != "topk_gkd":
            continue
        table = tree.node_table([node], N_SIG)
        prefix = tuple(int(t) for t in tree.prefix(node))
        columns = np.where(table.seen, table.tokens, 0)[0]
        onp = np.where(table.seen, table.onp_visits, 0)[0]
        node_success = np.where(table.seen, table.onp_successes, 0)[0].sum() / max(onp.sum(), 1)
        p_full, q_full = policy.probs(prefix), teacher_policy[teacher].probs(prefix)
        ideal, grad = reference(p_full, q_full, columns, table.in_s[0], table.s[0], node_success, k, convention)
        want = cosine(ideal, grad)
        if np.isnan(want):
            assert not row["valid"]
        elif min(np.linalg.norm(ideal), np.linalg.norm(grad)) > 1e-5:
            assert row["valid"] and abs(row["cosine"] - want) < 2e-3, (row, want)
            checked += 1
        top = np.argsort(-p_full)[:k]
        outside_topk += bool(np.any(table.in_s[0] & ~np.isin(columns, top)))
        gkd = by_key[(path, node, teacher, convention, "gkd")]
        if k >= policy.vocab_size:
            assert gkd["valid"] == row["valid"]
            if row["valid"]:
                assert abs(gkd["cosine"] - row["cosine"]) < 1e-5
    assert checked >= 20, checked
    if k < policy.vocab_size:
        assert outside_topk >= 10, outside_topk  # S_u children in the tail: the bucket is exercised
        assert any(abs(by_key[key[:4] + ("gkd",)]["cosine"] - r["cosine"]) > 1e-2
                   for key, r in by_key.items() if key[4] == "topk_gkd" and r["valid"])


def test_topk_rows_leave_the_other_algorithms_rows_unchanged(exact_question):
    tree, policy, teachers = exact_question
    plain = score_paths("q", tree, policy, np.zeros(1, np.int64), teachers, N_SIG, 0.5, chunk=4, algorithms=("gkd",))
    with_topk = [r for r in _rows(exact_question, 2) if r["algorithm"] == "gkd"]
    assert len(plain) == len(with_topk) > 0
    for a, b in zip(plain, with_topk):
        assert {k: v for k, v in a.items() if k != "cosine"} == {k: v for k, v in b.items() if k != "cosine"}
        assert a["cosine"] == b["cosine"] or (np.isnan(a["cosine"]) and np.isnan(b["cosine"]))


def test_a_k_below_one_is_a_config_error(exact_question):
    tree, policy, teachers = exact_question
    with pytest.raises(ConfigError, match="topk_gkd_k"):
        score_paths("q", tree, policy, np.zeros(1, np.int64), teachers, N_SIG, 0.5, chunk=4,
                    algorithms=("topk_gkd",), topk_k=0)
    C.register_schema()
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = C.from_omegaconf(compose(config_name="config", overrides=["+experiment=exact", "topk_gkd_k=0"]))
    with pytest.raises(ConfigError, match="topk_gkd_k"):
        C.validate(cfg)


def test_the_run_setting_reaches_the_rows(tmp_path):
    """algorithms=[gkd,topk_gkd] with topk_gkd_k >= V: the run's top-k GKD rows are its GKD rows;
    with k = 1 they are not."""
    import pyarrow.parquet as pq

    from tests.test_run import composed
    from jaxalign.run import execute

    def rows(k, where):
        execute(composed("+experiment=exact", "dataset.num_questions=1", "algorithms=[gkd,topk_gkd]",
                         f"topk_gkd_k={k}"), where)
        cosines = {"gkd": {}, "topk_gkd": {}}
        for path in sorted(p for p in (where / "questions").glob("*.parquet") if ".children." not in p.name):
            for r in pq.read_table(path).to_pylist():
                if r["valid"]:
                    cosines[r["algorithm"]][(r["qid"], r["path"], r["depth"], r["teacher"], r["convention"])] = r["cosine"]
        keys = sorted(cosines["gkd"])
        assert keys and sorted(cosines["topk_gkd"]) == keys
        return np.array([cosines["gkd"][k] for k in keys]), np.array([cosines["topk_gkd"][k] for k in keys])

    gkd, topk = rows(1000, tmp_path / "wide")
    np.testing.assert_allclose(topk, gkd, atol=1e-6)
    gkd, topk = rows(1, tmp_path / "narrow")
    assert np.abs(topk - gkd).max() > 1e-3
