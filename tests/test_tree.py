"""The skeleton trie: counting rules against a brute-force walk, checkpoint round trip, intervals."""

import numpy as np
import pytest

from jaxalign.errors import JaxalignError
from jaxalign.tree import RolloutTree, wilson_interval

EOS = 9


def brute_force(paths, batches, count_ancestors):
    """Per-(prefix, token) counts by walking every rollout token by token over a prefix set."""
    skeleton = {tuple(p[:d]) for p in paths for d in range(len(p))}
    onp, forced = {}, {}

    def bump(table, key, win):
        v, s = table.get(key, (0, 0))
        table[key] = (v + 1, s + int(win))

    for start, rows, wins in batches:
        for row, win in zip(rows, wins):
            if start is None:
                prefix, seq = (), list(row)
            else:
                prefix, forced_tok = start
                bump(forced, (prefix, forced_tok), win)
                if count_ancestors:
                    for d in range(len(prefix)):
                        bump(forced, (prefix[:d], prefix[d]), win)
                prefix, seq = prefix + (forced_tok,), list(row)
            for tok in seq:
                if prefix not in skeleton:
                    break
                bump(onp, (prefix, tok), win)
                prefix = prefix + (tok,)
    return onp, forced


def tree_counts(tree):
    onp, forced = {}, {}
    for e in range(tree.num_edges):
        key = (tuple(int(t) for t in tree.prefix(tree.edge_node[e])), int(tree.edge_token[e]))
        if tree.onp_visits[e]:
            onp[key] = (int(tree.onp_visits[e]), int(tree.onp_successes[e]))
        if tree.forced_visits[e]:
            forced[key] = (int(tree.forced_visits[e]), int(tree.forced_successes[e]))
    return onp, forced


def random_rollouts(rng, n, prefix_len=0, vocab=3):
    """Rollouts over a 3-token alphabet so they often follow the paths, ending in EOS."""
    rows = []
    for _ in range(n):
        length = rng.integers(1, 7)
        rows.append(list(rng.integers(0, vocab, size=length - 1)) + [EOS])
    width = max(len(r) for r in rows)
    tokens = np.full((n, width), -1)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = r
    return rows, tokens, np.array([len(r) for r in rows]), rng.uniform(size=n) < 0.5


@pytest.mark.parametrize("count_ancestors", [False, True])
def test_counts_equal_brute_force(count_ancestors):
    rng = np.random.default_rng(0)
    paths = [np.array([0, 1, 2, 0, EOS]), np.array([0, 1, 0, EOS]), np.array([2, 2, EOS]), np.array([0, 1, 2, 1, 1, EOS])]
    tree = RolloutTree.from_paths(paths, [True, True, False, False])
    batches = []
    rows, tokens, lengths, wins = random_rollouts(rng, 400)
    tree.add_rollouts(tokens, lengths, wins)
    batches.append((None, rows, wins))
    for _ in range(30):
        node = int(rng.integers(tree.num_nodes))
        forced = int(rng.integers(0, 3))
        rows, tokens, lengths, wins = random_rollouts(rng, 20)
        tree.add_rollouts(tokens, lengths, wins, start=(node, forced), count_ancestors=count_ancestors)
        batches.append(((tuple(int(t) for t in tree.prefix(node)), forced), rows, wins))
    onp, forced = brute_force(paths, batches, count_ancestors)
    got_onp, got_forced = tree_counts(tree)
    assert got_onp == onp
    assert got_forced == forced


def test_excluded_rows_are_not_counted():
    paths = [np.array([0, 1, EOS])]
    tree = RolloutTree.from_paths(paths, [True])
    tokens = np.array([[0, 1, EOS], [0, 2, EOS]])
    tree.add_rollouts(tokens, np.array([3, 3]), np.array([True, False]), exclude=np.array([True, False]))
    counts = tree.edge_counts()
    assert counts["visits"][tree.edge(0, 0)] == 1 and counts["successes"][tree.edge(0, 0)] == 0


def test_skeleton_shares_prefixes_and_memory_is_bounded():
    paths = [np.array([0, 1, 2, EOS]), np.array([0, 1, 3, EOS]), np.array([4, EOS])]
    tree = RolloutTree.from_paths(paths, [True, False, True])
    assert tree.num_nodes == 1 + 1 + 1 + 2 + 1  # root, [0], [0 1], [0 1 2], [0 1 3], [4]
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, 8, size=(5000, 40))
    tree.add_rollouts(tokens, np.full(5000, 40), rng.uniform(size=5000) < 0.5)
    assert tree.num_edges <= tree.num_nodes * 10  # O(nodes x children seen), not O(rollouts x length)


def test_pytree_round_trip_and_continue():
    paths = [np.array([0, 1, 2, 0, EOS]), np.array([2, 2, EOS])]
    rng = np.random.default_rng(2)
    a = RolloutTree.from_paths(paths, [True, False])
    _, tokens, lengths, wins = random_rollouts(rng, 100)
    a.add_rollouts(tokens, lengths, wins)
    b = RolloutTree.from_pytree(a.to_pytree())
    _, tokens, lengths, wins = random_rollouts(rng, 50)
    for tree in (a, b):
        tree.add_rollouts(tokens, lengths, wins, start=(1, 2))
    ta, tb = a.to_pytree(), b.to_pytree()
    assert ta.keys() == tb.keys()
    for k in ta:
        np.testing.assert_array_equal(ta[k], tb[k], err_msg=k)


def test_wilson_interval_known_values():
    low, high = wilson_interval(np.array([8, 0, 50]), np.array([10, 10, 100]))
    np.testing.assert_allclose(low, [0.4902, 0.0, 0.4038], atol=1e-4)
    np.testing.assert_allclose(high, [0.9433, 0.2775, 0.5962], atol=1e-4)
    low, high = wilson_interval(np.array([0]), np.array([0]))
    assert (low, high) == (0.0, 1.0)


def test_decision_nodes_and_node_table():
    paths = [np.array([0, 1, EOS]), np.array([1, EOS])]
    tree = RolloutTree.from_paths(paths, [True, False])
    def add(node_tok_rows):
        for start, tok, n, wins in node_tok_rows:
            tree.add_rollouts(np.full((n, 1), -1), np.zeros(n, int), np.arange(n) < wins, start=(start, tok))
    add([(0, 0, 30, 20), (0, 1, 25, 5), (0, 2, 5, 5)])      # root: two children with >= 20 visits
    node_01 = tree.edge_child[tree.edge(0, 0)]
    add([(node_01, 1, 30, 15), (node_01, 2, 30, 15)])      # SR range 0: not a decision node
    assert list(tree.decision_nodes(n_sig=20)) == [0]
    table = tree.node_table([0, node_01], n_sig=20)
    assert table.in_s[0].sum() == 2 and table.seen[0].sum() == 3
    np.testing.assert_allclose(sorted(table.s[0][table.in_s[0]]), [0.2, 20 / 30])
    with pytest.raises(JaxalignError, match="columns"):
        tree.node_table([0], n_sig=20, columns=2)


def test_bad_inputs():
    with pytest.raises(JaxalignError):
        RolloutTree.from_paths([], [])
    tree = RolloutTree.from_paths([np.array([0, EOS])], [True])
    with pytest.raises(JaxalignError, match="disagree"):
        tree.add_rollouts(np.zeros((2, 3), int), np.array([3]), np.array([True, False]))
    with pytest.raises(JaxalignError, match="not in the tree"):
        tree.add_rollouts(np.zeros((1, 3), int), np.array([3]), np.array([True]), start=(99, 0))


def test_edges_and_visits_look_up_pairs_in_bulk():
    tree = RolloutTree.from_paths([np.array([0, 1, EOS]), np.array([2, EOS])], [True, False])
    tree.add_rollouts(np.full((5, 1), -1), np.zeros(5, int), np.ones(5, bool), start=(0, 3))
    nodes, tokens = np.array([0, 0, 0, 0, 7]), np.array([0, 2, 3, 4, 0])
    want = [tree.edge(u, k) if tree.edge(u, k) is not None else -1 for u, k in zip(nodes, tokens)]
    np.testing.assert_array_equal(tree.edges(nodes, tokens), want)
    visits = tree.edge_counts()["visits"]
    np.testing.assert_array_equal(tree.visits(nodes, tokens), [visits[e] if e >= 0 else 0 for e in want])
    assert tree.visits(nodes, tokens)[2] == 5 and tree.visits([], []).shape == (0,)


def test_rollouts_through_a_node_equal_the_brute_force_prefix_match():
    from jaxalign.pipeline.minillm import rollouts_through

    rng = np.random.default_rng(7)
    paths = [rng.integers(0, 3, 9), rng.integers(0, 3, 6)]
    tree = RolloutTree.from_paths(paths, [True, False])
    tokens = np.full((200, 10), -1)
    lengths = rng.integers(1, 11, 200)
    for r, n in enumerate(lengths):  # mostly following a path for a while, then anything
        base, cut = paths[r % 2], rng.integers(0, 10)
        tokens[r, :n] = [base[i] if i < min(cut, len(base)) else rng.integers(0, 3) for i in range(n)]
    counted = rng.uniform(size=200) < 0.9
    nodes_at = {int(tree.path_nodes[p, d]): (p, d) for p in range(2) for d in range(int(tree.path_length[p]))}
    got = rollouts_through(tree, nodes_at, tokens, lengths, counted)
    for node, (p, d) in nodes_at.items():
        want = [r for r in range(200) if counted[r] and lengths[r] > d and list(tokens[r, :d]) == list(paths[p][:d])]
        assert got[node] == want, (node, p, d)
    assert sum(map(len, got.values())) > 200  # nodes deep along the paths are reached too
