"""The MPII skeleton graph, its K = 3 spatial partition, normalisation and pyramid (models/graph.py)."""

from __future__ import annotations

import numpy as np
import pytest

from models import graph as G


def test_joint_order_is_the_spec_order():
    # SPEC section 4, the full MPII order; the pose rows and the graph share this one tuple
    assert G.JOINTS == (
        "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis", "thorax",
        "upper_neck", "head_top", "r_wrist", "r_elbow", "r_shoulder", "l_shoulder", "l_elbow", "l_wrist",
    )  # fmt: skip


def test_skeleton_is_a_tree_of_mpii_limbs():
    g = G.mpii_graph()
    assert g.num_vertices == 16 and len(g.edges) == 15  # connected with V - 1 edges: a tree
    a = g.binary(self_loops=False)
    assert (a == a.T).all()
    # limbs of the MPII definition
    name = dict(enumerate(G.JOINTS))
    limbs = {frozenset((name[i], name[j])) for i, j in g.edges}
    for limb in [("r_wrist", "r_elbow"), ("l_shoulder", "thorax"), ("pelvis", "thorax"), ("l_knee", "l_ankle")]:
        assert frozenset(limb) in limbs
    assert frozenset(("r_shoulder", "l_shoulder")) not in limbs


def test_partition_follows_hop_distance_to_the_centre():
    g = G.mpii_graph("thorax")
    hop = g.hops()
    assert hop[G.JOINTS.index("thorax")] == 0 and hop[G.JOINTS.index("r_wrist")] == 3
    parts = g.partition()
    assert parts.shape == (3, 16, 16)
    np.testing.assert_array_equal(parts.sum(axis=0), g.binary(self_loops=True))  # subsets tile the neighbourhoods
    np.testing.assert_array_equal(np.diag(parts[0]), np.ones(16))  # each vertex is its own root
    np.testing.assert_array_equal(parts[1], parts[2].T)  # i centripetal to j <=> j centrifugal to i
    i, j = np.nonzero(parts[1])
    assert (hop[j] < hop[i]).all()
    elbow, shoulder, wrist = (G.JOINTS.index(n) for n in ("r_elbow", "r_shoulder", "r_wrist"))
    assert parts[1, elbow, shoulder] == 1 and parts[2, elbow, wrist] == 1 and parts[0, elbow, elbow] == 1


def test_centre_choice_changes_the_partition():
    thorax, pelvis = G.mpii_graph("thorax"), G.mpii_graph("pelvis")
    assert thorax.center == 7 and pelvis.center == 6
    # the spine edge pelvis-thorax points inward from opposite ends
    assert thorax.partition()[1, 6, 7] == 1 and pelvis.partition()[1, 7, 6] == 1
    with pytest.raises(ValueError, match="centre"):
        G.mpii_graph("nose")


def test_three_vertex_chain_by_hand():
    """Chain a - b - c, centre b. With self-loops a and c have degree 2, b degree 3; each target
    vertex takes 1/deg of every neighbour, split by hop distance (values worked out by hand)."""
    g = G.Graph(("a", "b", "c"), ((0, 1), (1, 2)), 1)
    a = g.adjacency()  # [k, v (source), w (target)]
    expected = np.zeros((3, 3, 3))
    expected[0, 0, 0] = expected[0, 2, 2] = 1 / 2  # a and c: themselves (root)
    expected[1, 1, 0] = expected[1, 1, 2] = 1 / 2  # a and c: b is closer to the centre
    expected[0, 1, 1] = 1 / 3  # b: itself
    expected[2, 0, 1] = expected[2, 2, 1] = 1 / 3  # b: a and c are farther out
    np.testing.assert_allclose(a, expected, atol=1e-7)


def _totals_per_target(a: np.ndarray) -> np.ndarray:
    # what einsum('nkctv,kvw->nctw') gives target w when every source carries 1
    return np.einsum("kvw->w", a)


def test_every_vertex_aggregates_total_weight_one():
    for center in G.CENTERS:
        g = G.mpii_graph(center)
        a = g.adjacency()
        assert a.shape == (3, 16, 16) and a.dtype == np.float32
        np.testing.assert_allclose(_totals_per_target(a), np.ones(16), atol=1e-6)
        # no entry above the largest possible share, 1/2 (a leaf and its one neighbour)
        assert a.max() <= 0.5 + 1e-6
        head, thorax = G.JOINTS.index("head_top"), G.JOINTS.index("thorax")
        assert a[0, head, head] == pytest.approx(1 / 2)  # a leaf: itself and the upper neck
        # the thorax has five neighbours with itself (neck, both shoulders, pelvis)
        assert a[:, :, thorax].sum() == pytest.approx(1.0) and a[0, thorax, thorax] == pytest.approx(1 / 5)
        for level in G.pyramid(center):
            np.testing.assert_allclose(_totals_per_target(level.graph.adjacency()), 1.0, atol=1e-6)


def test_downsample_operators_give_every_coarse_vertex_total_weight_one():
    levels = G.pyramid()
    for fine, coarse in zip(levels[:-1], levels[1:], strict=True):
        d = G.downsample_adjacency(fine.graph, coarse.pool)
        np.testing.assert_allclose(_totals_per_target(d), np.ones(coarse.graph.num_vertices), atol=1e-6)


def test_psgcn_operators_are_normalised_in_every_block():
    from models import build_model

    model = build_model("psgcn")
    for block in model.blocks:
        a = block.gcn.A.numpy()
        np.testing.assert_allclose(_totals_per_target(a), 1.0, atol=1e-6)
        assert a.max() <= 0.5 + 1e-6


def test_pyramid_coarsens_16_to_7_to_4_with_derived_edges():
    levels = G.pyramid("thorax")
    assert [lv.graph.num_vertices for lv in levels] == [16, 7, 4]
    assert levels[0].pool is None
    for fine, coarse in zip(levels[:-1], levels[1:], strict=True):
        p = coarse.pool
        assert p.shape == (coarse.graph.num_vertices, fine.graph.num_vertices)
        np.testing.assert_allclose(p.sum(axis=1), 1.0)  # each coarse vertex interpolates its group
        assert ((p > 0).sum(axis=0) == 1).all()  # each fine vertex belongs to exactly one group
        # a coarse edge exists exactly when a fine edge crosses the two groups
        fa = fine.graph.binary(self_loops=False)
        groups = [np.flatnonzero(row) for row in p]
        for a in range(len(groups)):
            for b in range(a + 1, len(groups)):
                crosses = fa[np.ix_(groups[a], groups[b])].any()
                assert crosses == ((a, b) in coarse.graph.edges)
        # the centre follows the group that holds it
        assert p[coarse.graph.center, fine.graph.center] > 0
    assert levels[1].graph.names[levels[1].graph.center] == "chest"
    assert levels[2].graph.names == ("lower_body", "trunk", "r_arm", "l_arm")
    assert set(levels[2].graph.edges) == {(0, 1), (1, 2), (1, 3)}
    assert G.pyramid("pelvis")[1].graph.names[G.pyramid("pelvis")[1].graph.center] == "hips"


def test_downsample_operator_is_gather_then_interpolate():
    fine, coarse = G.pyramid()[:2]
    d = G.downsample_adjacency(fine.graph, coarse.pool)
    assert d.shape == (3, 16, 7)
    a = fine.graph.adjacency()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 16))  # 5 channels on 16 joints
    for k in range(3):
        gathered = x @ a[k]  # fine graph convolution of subset k
        np.testing.assert_allclose(x @ d[k], gathered @ coarse.pool.T, rtol=1e-5, atol=1e-6)


def test_invalid_graphs_are_refused():
    with pytest.raises(ValueError, match="connected"):
        G.Graph(("a", "b", "c"), ((0, 1),), 0)
    with pytest.raises(ValueError, match="edge"):
        G.Graph(("a", "b"), ((0, 2),), 0)
    with pytest.raises(ValueError, match="exactly once"):
        G.pooling_matrix({"x": (0, 1), "y": (1, 2)}, 3)
