"""ICE of a binary tree-ensemble classifier read off its trees: exact, and no hybrid rows.

ICE for input j is ``L(x) - mean_k L(x with x_j := b_k[j])`` over the background rows b_k, in
log-odds. On the general path (explanations.py) the model runs once per distinct background value
of every input: about 400 rows per record on the committed model. For a boosted-tree model
(``TreeEnsembleClassifier``, two classes, ``LOGISTIC``) L is a sum of leaf values, and the sum
can be read off the trees instead:

- A leaf is reached by ``x with x_j := v`` when every condition on its path holds: those on
  input j for v, the others for x. So ``mean_k L(x with x_j := b_k[j])`` sums, over the leaves
  whose path conditions on inputs other than j all hold for x, the leaf value times ``W[leaf, j]``:
  the share of background rows whose value of j meets the leaf's conditions on j. W depends on
  the background only and is computed once.
- Per record, that is one decision per branch node, then per leaf the inputs of its failing
  conditions, as a bit mask: none (the leaf x reaches), all of one input j (it counts for j), or
  several (for no input). A few vector operations over the trees' nodes, about 0.1 ms a record.

Which encoded column comes from which input is read from the preprocessing graph, for the column
by column operations sklearn-onnx writes (Concat, OneHotEncoder, Reshape, Scaler, Imputer, Cast,
Identity); any other graph keeps the general path. Tree semantics follow the ONNX-ML
TreeEnsembleClassifier specification (onnx/docs/Operators-ml.md): a branch goes to its true child
when its comparison holds, or when the value is missing and ``nodes_missing_value_tracks_true``
is set. The explainer checks all this against onnxruntime's own answers before using it.
"""

from __future__ import annotations

import math
import operator

import numpy as np

from . import onnxgraph

_ML = "ai.onnx.ml"
_SAME_COLUMNS = {("", "Identity"), ("", "Cast"), (_ML, "Scaler"), (_ML, "Imputer")}
_COMPARE = {b"BRANCH_LEQ": operator.le, b"BRANCH_LT": operator.lt, b"BRANCH_GTE": operator.ge,
            b"BRANCH_GT": operator.gt, b"BRANCH_EQ": operator.eq, b"BRANCH_NEQ": operator.ne}


_CHUNK = 16  # rows whose masks are held at once (16 × 9,150 nodes × 2 bytes on the committed model)


class NotATreeModel(ValueError):
    """The model is not one this module can read; the general path explains it."""


class TreeIce:
    """The trees of a binary TreeEnsembleClassifier, flattened into path conditions per leaf."""

    def __init__(self, node, owners: np.ndarray, inputs: list[str]) -> None:
        a = onnxgraph.attributes(node)
        if a.get("post_transform") != b"LOGISTIC":
            raise NotATreeModel(f"post_transform is {a.get('post_transform')!r}, not LOGISTIC")
        if len(a.get("classlabels_int64s") or a.get("classlabels_strings") or ()) != 2:
            raise NotATreeModel("not a two-class model")
        if len(set(a.get("class_ids", ()))) != 1:
            raise NotATreeModel("leaf weights for both classes")
        if "nodes_values" not in a or "class_weights" not in a:
            raise NotATreeModel("thresholds or weights given as tensors")
        self.encoded_input = node.input[0]
        self.owners = owners  # per encoded column, the index of the input it is made from
        self.alone = b""  # the trees as a model of their own, on the encoded input (``recognize``)
        self.inputs = list(inputs)
        self.feature_count = feature_count = len(inputs)
        nodes = list(zip(a["nodes_treeids"], a["nodes_nodeids"]))
        index = {key: i for i, key in enumerate(nodes)}
        modes, features = a["nodes_modes"], a["nodes_featureids"]
        tracks = a.get("nodes_missing_value_tracks_true") or [0] * len(nodes)
        sides = zip(nodes, a["nodes_truenodeids"], a["nodes_falsenodeids"])
        children = {i: (index[(t, yes)], index[(t, no)])
                    for i, ((t, _), yes, no) in enumerate(sides) if modes[i] != b"LEAF"}
        if any(modes[i] not in _COMPARE for i in children):
            raise NotATreeModel(f"unknown node mode among {sorted(set(modes))}")
        weight = {}
        for t, n, w in zip(a["class_treeids"], a["class_nodeids"], a["class_weights"]):
            weight[index[(t, n)]] = weight.get(index[(t, n)], 0.0) + w
        if feature_count > 62:
            raise NotATreeModel("more than 62 inputs (the path masks are 64-bit)")
        referenced = {child for pair in children.values() for child in pair}
        branches = sorted(children)
        branch = {i: b for b, i in enumerate(branches)}
        self._column = np.array([features[i] for i in branches], dtype=np.intp)
        if len(self._column) and self._column.max() >= len(owners):
            raise NotATreeModel("a branch reads a column the preprocessing does not make")
        self._threshold = np.array([a["nodes_values"][i] for i in branches], dtype=np.float32)
        self._modes = [(_COMPARE[mode], np.array([branch[i] for i in branches if modes[i] == mode]))
                       for mode in sorted({modes[i] for i in children})]
        self._tracks = np.array([bool(tracks[i]) for i in branches])
        self._tracked = bool(self._tracks.any())  # some branch sends a missing value to its true side
        # Every node of the trees with a branch, by depth: its parent's place, and the edge from the
        # parent (which branch decides it, on which side, and the bit of the input that branch reads).
        level = [(i, (None, True)) for i in range(len(nodes)) if i not in referenced and i in children]
        if not level:
            raise NotATreeModel("no tree has a branch")
        self.trees = len(level)
        order, parent, edge_branch, edge_true, edge_bit, levels = [], [], [], [], [], 0
        place = {}
        while level:
            levels += 1
            below = []
            for i, (up, way) in level:
                place[i] = len(order)
                order.append(i)
                parent.append(place.get(up, -1))
                edge_branch.append(branch.get(up, 0))
                edge_true.append(way)
                edge_bit.append(0 if up is None else 1 << int(owners[features[up]]))
                if i in children:
                    below += [(children[i][0], (i, True)), (children[i][1], (i, False))]
            level = below
        # A path's mask is the OR of its edges. The branches' are gathered by pointer jumping: after
        # step k each branch holds the OR over itself and its 2^k - 1 nearest ancestors (the deepest
        # branch has levels - 1 edges). The extra last element stands for a root's parent, a mask of
        # 0 that is its own ancestor. A leaf's is then its own edge's with its parent's: the jumps
        # move half the nodes' masks, and their index arrays half the bytes, of a jump over them all.
        inner = [p for p, i in enumerate(order) if i in children]
        leaves = [p for p, i in enumerate(order) if i not in children]
        at = {p: k for k, p in enumerate(inner)}
        ancestor = np.array([at.get(parent[p], len(inner)) for p in inner] + [len(inner)], dtype=np.intp)
        self._jumps = []
        while 2 ** len(self._jumps) < levels - 1:
            self._jumps.append(ancestor)
            ancestor = ancestor[ancestor]
        # The narrowest integer that holds a bit per input: a record's masks are one per node.
        bits = np.int16 if feature_count <= 15 else np.int32 if feature_count <= 31 else np.int64
        self._inner_edges = self._edges(inner, edge_branch, edge_true, edge_bit, bits, sentinel=True)
        self._leaf_edges = self._edges(leaves, edge_branch, edge_true, edge_bit, bits, sentinel=False)
        self._leaf_parent = np.array([at[parent[p]] for p in leaves], dtype=np.intp)
        self._leaf = np.array(leaves, dtype=np.intp)
        self._values = np.array([weight.get(order[p], 0.0) for p in self._leaf], dtype=np.float64)
        # What a record costs, counted in model rows for the explanation budget: the reading visits
        # every node, a model row one path per tree; one row per node of an average tree is on the
        # safe side (measured: about half that).
        self.rows_per_record = math.ceil(len(order) / self.trees)
        self._weighted = np.tile(self._values[:, None], (1, feature_count))
        self.sign = 1.0

    @staticmethod
    def _edges(places: list[int], branch: list, true: list, bit: list, bits, sentinel: bool) -> tuple:
        """The edges into the nodes at ``places``: the branch that decides each, the side it is on,
        the bit of the input that branch reads; and a last edge of no branch and no bit if asked."""
        extra = [(0, True, 0)] if sentinel else []
        rows = [(branch[p], true[p], bit[p]) for p in places] + extra
        return (np.array([r[0] for r in rows], dtype=np.intp), np.array([r[1] for r in rows]),
                np.array([r[2] for r in rows], dtype=bits))

    def _masks(self, encoded: np.ndarray) -> np.ndarray:
        """Per row and leaf (rows × leaves): the bits of the inputs whose conditions on its path fail."""
        # ``take`` with indices known in range (mode "clip" checks none): a third of what fancy
        # indexing costs for a row.
        value = encoded.take(self._column, axis=1, mode="clip")
        if len(self._modes) == 1:
            decision = self._modes[0][0](value, self._threshold)
        else:
            decision = np.empty(value.shape, dtype=bool)
            for compare, where in self._modes:
                decision[:, where] = compare(value[:, where], self._threshold[where])
        if self._tracked and np.isnan(encoded).any():  # most rows miss nothing: skip a node-wide pass
            decision |= np.isnan(value) & self._tracks
        branch, true, bit = self._inner_edges
        mask = (decision.take(branch, axis=1, mode="clip") != true) * bit
        for ancestor in self._jumps:
            mask |= mask.take(ancestor, axis=1, mode="clip")
        branch, true, bit = self._leaf_edges
        leaves = (decision.take(branch, axis=1, mode="clip") != true) * bit
        leaves |= mask.take(self._leaf_parent, axis=1, mode="clip")
        return leaves

    def learn_background(self, encoded_background: np.ndarray) -> None:
        """Per leaf and input: the leaf's value times the share of background rows meeting its
        conditions on that input."""
        meets = np.zeros(self._weighted.shape)
        for masks in map(self._masks, _chunks(encoded_background)):
            for j in range(self.feature_count):
                meets[:, j] += ((masks >> j) & 1 == 0).sum(axis=0)
        self._weighted = self._values[:, None] * meets / len(encoded_background)

    def raw(self, encoded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The sum of the leaf values each row reaches, and how many leaves it reaches."""
        reached = [self._masks(chunk) == 0 for chunk in _chunks(encoded)]
        return (np.concatenate([r @ self._values for r in reached]),
                np.concatenate([r.sum(axis=1) for r in reached]))

    def ice(self, encoded: np.ndarray) -> np.ndarray:
        """ICE per row and input (rows × inputs), in log-odds, from the rows' encoded columns."""
        if len(encoded) > _CHUNK:
            return np.concatenate([self.ice(chunk) for chunk in _chunks(encoded)])
        masks, count, trees = self._masks(encoded), self.feature_count, self.trees
        if len(encoded) == 1:
            return self._ice_one(masks[0])[None, :]
        # The leaves that count: those x reaches (mask 0, one per tree and row, in row order) and
        # those whose failing conditions all read one input (one bit set).
        rows, leaves = np.divmod(np.flatnonzero(masks & (masks - 1) == 0), masks.shape[1])
        bits = masks[rows, leaves]
        reached, single = leaves[bits == 0], bits != 0
        background = self._weighted[reached].reshape(len(encoded), trees, count).sum(axis=1)
        inputs = np.log2(bits[single]).astype(np.intp)
        background += np.bincount(
            rows[single] * count + inputs, weights=self._weighted[leaves[single], inputs],
            minlength=len(encoded) * count,
        ).reshape(len(encoded), count)
        own = self._values[reached].reshape(len(encoded), trees).sum(axis=1)
        return self.sign * (own[:, None] - background)


    def _ice_one(self, mask: np.ndarray) -> np.ndarray:
        """``ice`` for one row's leaf masks, in one dimension (a third less than the batch form)."""
        (counted,) = (mask & (mask - 1) == 0).nonzero()
        bits = mask.take(counted, mode="clip")
        alone = bits != 0
        reached, others = counted[~alone], counted[alone]
        inputs = np.log2(bits[alone]).astype(np.intp)
        count = self.feature_count
        background = self._weighted.take(reached, axis=0, mode="clip").sum(axis=0)
        background += np.bincount(
            inputs, weights=self._weighted.take(others * count + inputs, mode="clip"), minlength=count
        )
        return self.sign * (self._values.take(reached, mode="clip").sum() - background)


def _chunks(rows: np.ndarray):
    """``rows`` a few at a time: a row's masks take a few bytes per node of the trees."""
    return (rows[start : start + _CHUNK] for start in range(0, len(rows), _CHUNK))


def recognize(model_bytes: bytes, outputs: tuple[str, str]) -> tuple[TreeIce, bytes]:
    """The model's trees and the model serialized with their encoded input as one more output.

    ``outputs`` are the model's label and probabilities. NotATreeModel says why the model does not
    qualify.
    """
    try:
        model = onnxgraph.parse(model_bytes)
    except Exception as problem:  # a model onnxruntime reads but this subset cannot: the general path
        raise NotATreeModel(f"unreadable model: {problem}") from None
    graph = model.graph
    trees = [node for node in graph.node if (node.domain, node.op_type) == (_ML, "TreeEnsembleClassifier")]
    if len(trees) != 1 or tuple(trees[0].output[:2]) != tuple(outputs):
        raise NotATreeModel("the outputs are not those of one TreeEnsembleClassifier")
    constant = {initializer.name for initializer in graph.initializer}
    names = [value.name for value in graph.input if value.name not in constant]
    owners = _owners(graph, trees[0].input[0], names)
    if owners is None or owners.ndim != 1:
        raise NotATreeModel("the trees' input is not made column by column from the model's inputs")
    try:
        found = TreeIce(trees[0], owners, names)
    except (KeyError, IndexError, TypeError, ValueError) as problem:
        if isinstance(problem, NotATreeModel):
            raise
        # onnxruntime loaded this model, so the reading is what fails: the general path explains it
        raise NotATreeModel(f"trees this reading cannot follow ({type(problem).__name__}: {problem})") from None
    found.alone = onnxgraph.node_alone(model, trees[0], len(owners))
    return found, onnxgraph.add_float_output(model, found.encoded_input)


def _owners(graph, target: str, names: list[str]) -> np.ndarray | None:
    """For the tensor ``target``, the index in ``names`` of the input each column comes from."""
    owners: dict[str, np.ndarray] = {}
    for value in graph.input:
        shape = onnxgraph.column_shape(value)
        if value.name in names and shape is not None:
            owners[value.name] = np.full(shape, names.index(value.name), dtype=np.intp)
    constants = {}
    for initializer in graph.initializer:
        try:
            constants[initializer.name] = onnxgraph.tensor(initializer)
        except ValueError:
            continue
    for node in graph.node:
        if target in owners:
            break
        known = [owners.get(name) for name in node.input]
        made = _columns((node.domain, node.op_type), node, known, constants)
        if made is not None:
            owners.update((name, made) for name in node.output[:1])
    return owners.get(target)


def _columns(op: tuple[str, str], node, known: list, constants: dict) -> np.ndarray | None:
    if op == ("ai.onnx", op[1]):
        op = ("", op[1])
    if not known or known[0] is None:
        return None
    if op in _SAME_COLUMNS:
        return known[0]
    if op == ("", "Concat"):
        if any(part is None or part.ndim != known[0].ndim for part in known):
            return None
        axis = int(onnxgraph.attributes(node).get("axis", 1))
        axis = axis if axis >= 0 else axis + known[0].ndim + 1
        return np.concatenate(known, axis=axis - 1) if axis >= 1 else None
    if op == (_ML, "OneHotEncoder"):
        a = onnxgraph.attributes(node)
        size = len(a.get("cats_strings") or a.get("cats_int64s") or ())
        return np.repeat(known[0][..., None], size, axis=-1) if size else None
    if op == ("", "Reshape") and len(node.input) == 2 and node.input[1] in constants:
        shape = [int(d) for d in constants[node.input[1]].reshape(-1)]
        if len(shape) >= 2 and shape[0] in (-1, 0) and all(d > 0 for d in shape[1:]):
            return known[0].reshape(shape[1:]) if math.prod(shape[1:]) == known[0].size else None
    return None
