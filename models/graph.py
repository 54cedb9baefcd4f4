"""The MPII-16 skeleton graph and its pyramid.

Joints and edges are those of :mod:`pipeline.modalities.skeleton` (the one place that owns the skeleton
layout): joint order is SPEC section 4 (the order of the pose feature rows); edges follow the
MPII definition (paper section 4.1, Fig. 4a). The spatial partition is ST-GCN's (Yan et al. 2018,
used by paper eq. 3-4): the neighbourhood of a vertex (its 1-hop neighbours and itself) splits
into K = 3 subsets by the neighbour's hop distance to the graph's centre compared with the
vertex's own:

- 0 root: same distance (the vertex itself, and neighbours as far from the centre),
- 1 centripetal: closer to the centre,
- 2 centrifugal: farther from the centre.

Normalisation follows ST-GCN's code (``normalize_digraph``, SPEC section 5): the whole
adjacency with self-loops is normalised by vertex degree, ``A[i, j] / deg(i)``, and only then
split into the three subsets. Every vertex therefore aggregates its neighbourhood with total
weight 1 over the three subsets. (Normalising each subset on its own, with ``deg + 0.001`` for
an empty row, gave some entries ``1 / sqrt(0.001) = 31.6``.)

choice: the centre is the thorax by default. The screening rule guarantees the upper body
(SPEC section 2), so the thorax is always estimated from visible landmarks, and dance motion is
mostly arms and head around it; ``center="pelvis"`` gives ST-GCN's usual centre.

Graph down-sampling (paper eq. 5-6, Fig. 4b): a coarser vertex set groups connected fine
vertices; the pooling matrix ``P`` (V_coarse x V_fine) interpolates each coarse vertex as the
mean of its group. The coarse graph's edges are derived from the fine one, two coarse vertices
being adjacent when ``P A P^T`` links them (some member of one group touches some member of the
other), and it is partitioned and normalised like the fine graph, with the centre at the group
that holds the fine centre. The down-sampling operator of subset k, from fine to coarse
vertices, is ``A_k P^T`` (V_fine x V_coarse): gather the fine neighbourhood, then interpolate.

choice: the pyramid is 16 -> 7 -> 4 vertices (SPEC "16 -> ~8 -> ~4"): seven body parts that
are each a connected run of joints, then lower body, trunk and the two arms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.modalities.skeleton import EDGES, MPII_JOINTS

K_SUBSETS = 3  # root, centripetal, centrifugal

# SPEC section 4, MPII order, and the MPII limbs (paper Fig. 4a) as index pairs:
# pipeline.modalities.skeleton defines both, with the pose rows they index (joint-major).
JOINTS: tuple[str, ...] = MPII_JOINTS
NUM_JOINTS = len(JOINTS)

# Pyramid levels: each group is a connected run of vertices of the level below (by index).
LEVEL1_GROUPS: dict[str, tuple[int, ...]] = {
    "r_leg": (0, 1),
    "l_leg": (4, 5),
    "hips": (2, 3, 6),
    "chest": (7, 12, 13),
    "head": (8, 9),
    "r_arm": (10, 11),
    "l_arm": (14, 15),
}
LEVEL2_GROUPS: dict[str, tuple[int, ...]] = {
    # indices into LEVEL1_GROUPS' order
    "lower_body": (0, 1, 2),
    "trunk": (3, 4),
    "r_arm": (5,),
    "l_arm": (6,),
}
CENTERS = ("thorax", "pelvis")


@dataclass(frozen=True)
class Graph:
    """An undirected skeleton graph with a centre; ``adjacency`` is its K-subset normalised form."""

    names: tuple[str, ...]
    edges: tuple[tuple[int, int], ...]
    center: int

    def __post_init__(self):
        v = len(self.names)
        if not 0 <= self.center < v:
            raise ValueError(f"centre {self.center} is not a vertex of a {v}-vertex graph")
        for i, j in self.edges:
            if not (0 <= i < v and 0 <= j < v) or i == j:
                raise ValueError(f"edge ({i}, {j}) is not valid for {v} vertices")
        if np.isinf(self.hops()).any():
            raise ValueError("the skeleton graph must be connected")

    @property
    def num_vertices(self) -> int:
        return len(self.names)

    def binary(self, self_loops: bool = True) -> np.ndarray:
        """(V, V) 0/1 adjacency, symmetric."""
        v = self.num_vertices
        a = np.zeros((v, v), dtype=np.float64)
        for i, j in self.edges:
            a[i, j] = a[j, i] = 1.0
        if self_loops:
            a += np.eye(v)
        return a

    def hops(self) -> np.ndarray:
        """(V,) hop distance of every vertex to the centre (inf where unreachable)."""
        adj = self.binary(self_loops=False) > 0
        dist = np.full(self.num_vertices, np.inf)
        dist[self.center] = 0
        frontier = [self.center]
        while frontier:
            nxt = []
            for i in frontier:
                for j in np.flatnonzero(adj[i]):
                    if np.isinf(dist[j]):
                        dist[j] = dist[i] + 1
                        nxt.append(int(j))
            frontier = nxt
        return dist

    def partition(self) -> np.ndarray:
        """(K=3, V, V) 0/1 subset adjacencies: root, centripetal, centrifugal; they sum to ``binary()``.

        ``A_k[i, j] = 1`` when j is in vertex i's neighbourhood and in subset k relative to i.
        """
        a = self.binary(self_loops=True)
        hop = self.hops()
        parts = np.zeros((K_SUBSETS, *a.shape))
        for i, j in zip(*np.nonzero(a), strict=True):
            if hop[j] == hop[i]:
                parts[0, i, j] = 1.0
            elif hop[j] < hop[i]:
                parts[1, i, j] = 1.0
            else:
                parts[2, i, j] = 1.0
        return parts

    def adjacency(self) -> np.ndarray:
        """(K, V, V) float32 subset adjacencies of the degree-normalised graph (paper eq. 4).

        Laid out for ``einsum('nkctv,kvw->nctw')``: entry [k, v, w] carries vertex v's feature to
        vertex w, so the matrix is transposed with respect to :meth:`partition`. For every target
        vertex w, ``sum over k and v of A[k, v, w] = 1``.
        """
        norm = normalise(self.binary(self_loops=True))
        return np.stack([(p * norm).T for p in self.partition()]).astype(np.float32)


def normalise(a: np.ndarray) -> np.ndarray:
    """Degree normalisation of an adjacency with self-loops, ``D^-1 A`` (ST-GCN ``normalize_digraph``).

    Row i is vertex i's neighbourhood; it is divided by the vertex's degree so that it sums to 1.
    A vertex with no neighbour at all (an empty row) is refused: with self-loops that cannot happen.
    """
    deg = a.sum(axis=1)
    if (deg <= 0).any():
        raise ValueError(f"vertices {np.flatnonzero(deg <= 0).tolist()} have no neighbour, not even themselves")
    return a / deg[:, None]


def mpii_graph(center: str = "thorax") -> Graph:
    if center not in CENTERS:
        raise ValueError(f"unknown graph centre {center!r}; one of {CENTERS}")
    return Graph(JOINTS, EDGES, JOINTS.index(center))


def pooling_matrix(groups: dict[str, tuple[int, ...]], num_fine: int) -> np.ndarray:
    """(V_coarse, V_fine): row c averages the fine vertices of group c (interpolation weights).

    Every fine vertex must belong to exactly one group, so nothing is dropped.
    """
    members = [i for g in groups.values() for i in g]
    if sorted(members) != list(range(num_fine)):
        raise ValueError(f"groups must cover each of the {num_fine} fine vertices exactly once: {groups}")
    p = np.zeros((len(groups), num_fine))
    for c, g in enumerate(groups.values()):
        p[c, list(g)] = 1.0 / len(g)
    return p


def coarsen(graph: Graph, groups: dict[str, tuple[int, ...]]) -> tuple[Graph, np.ndarray]:
    """Coarser graph and pooling matrix ``P`` (V_coarse x V_fine), see the module docstring."""
    p = pooling_matrix(groups, graph.num_vertices)
    linked = (p @ graph.binary(self_loops=False) @ p.T) > 0
    edges = tuple((i, j) for i in range(len(groups)) for j in range(i + 1, len(groups)) if linked[i, j])
    center = int(np.flatnonzero(p[:, graph.center])[0])
    return Graph(tuple(groups), edges, center), p


def downsample_adjacency(fine: Graph, p: np.ndarray) -> np.ndarray:
    """(K, V_fine, V_coarse) float32 operators ``(A_k P^T)`` in the einsum layout of :meth:`Graph.adjacency`."""
    a = fine.adjacency().astype(np.float64)
    return np.einsum("kvw,cw->kvc", a, p).astype(np.float32)


@dataclass(frozen=True)
class Level:
    """One pyramid level: its graph and the pooling matrix from the level above (None at the top)."""

    graph: Graph
    pool: np.ndarray | None


def pyramid(center: str = "thorax") -> tuple[Level, Level, Level]:
    """The three skeleton levels 16 -> 7 -> 4 used by PSGCN (paper Fig. 5)."""
    g0 = mpii_graph(center)
    g1, p1 = coarsen(g0, LEVEL1_GROUPS)
    g2, p2 = coarsen(g1, LEVEL2_GROUPS)
    return Level(g0, None), Level(g1, p1), Level(g2, p2)
