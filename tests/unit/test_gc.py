"""The pure mark and sweep (``pycontainerd.gc``) over hand-built graphs."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import pytest

from pycontainerd.gc import Node, ResourceType, sweep, tricolor, unreachable

pytestmark = pytest.mark.unit

C = ResourceType.CONTENT
S = ResourceType.SNAPSHOT


def n(key: str, type: ResourceType = C, ns: str = "ns") -> Node:
    return Node(type, ns, key)


def graph(edges: Mapping[Node, Iterable[Node]]) -> dict[Node, list[Node]]:
    return {k: list(v) for k, v in edges.items()}


def refs_of(edges: Mapping[Node, list[Node]]) -> tuple[Callable[[Node], list[Node]], list[Node]]:
    """A refs function over ``edges``, and the list of nodes it was asked about."""
    calls: list[Node] = []

    def refs(node: Node) -> list[Node]:
        calls.append(node)
        return edges.get(node._replace(flat=False), [])

    return refs, calls


def test_marks_what_the_roots_reach_and_nothing_else() -> None:
    a, b, c, d = n("a"), n("b"), n("c"), n("d")
    refs, _ = refs_of(graph({a: [b], b: [c]}))
    assert tricolor([a], refs) == {a, b, c}
    assert unreachable([a], refs, [a, b, c, d]) == [d]


def test_a_cycle_is_explored_once_and_kept_only_when_rooted() -> None:
    a, b, c = n("a"), n("b"), n("c")
    refs, calls = refs_of(graph({a: [b], b: [c], c: [a]}))
    assert tricolor([b], refs) == {a, b, c}
    assert sorted(calls) == sorted([a, b, c])
    # The same cycle with no root is garbage, all of it.
    assert unreachable([], refs, [a, b, c]) == [a, b, c]


def test_a_shared_node_is_followed_once() -> None:
    root1, root2, shared, leaf = n("r1"), n("r2"), n("shared"), n("leaf")
    refs, calls = refs_of(graph({root1: [shared], root2: [shared], shared: [leaf]}))
    assert tricolor([root1, root2, root1], refs) == {root1, root2, shared, leaf}
    assert calls.count(shared) == 1 and calls.count(root1) == 1


def test_a_deep_chain_needs_no_recursion() -> None:
    depth = 20_000  # far past the recursion limit
    chain = [n(str(i)) for i in range(depth)]
    edges = {chain[i]: [chain[i + 1]] for i in range(depth - 1)}
    refs, _ = refs_of(edges)
    assert len(tricolor([chain[0]], refs)) == depth
    # Rooted halfway, the first half is garbage.
    assert unreachable([chain[depth // 2]], refs, chain) == chain[: depth // 2]


def test_nodes_differ_by_type_and_namespace() -> None:
    blob = n("k")
    refs, _ = refs_of({})
    others = [Node(S, "ns", "k"), Node(C, "other", "k")]
    assert unreachable([blob], refs, [blob, *others]) == others


def test_a_flat_root_is_marked_plain_and_refs_decide_what_it_follows() -> None:
    parent, child = n("parent"), n("child")

    def refs(node: Node) -> list[Node]:
        return [] if node.flat else ([child] if node == parent else [])

    flat = parent._replace(flat=True)
    assert tricolor([flat], refs) == {parent}
    # Reached both ways, the plain path still keeps the child.
    assert tricolor([flat, parent], refs) == {parent, child}


def test_sweep_removes_the_unreachable_in_order_and_reports_them() -> None:
    a, b, c = n("a"), n("b"), n("c")
    removed: list[Node] = []
    assert sweep({b}, [a, b, c], removed.append) == [a, c]
    assert removed == [a, c]


def test_refs_may_name_nodes_that_do_not_exist() -> None:
    # A dangling label (a reference to a digest nobody has) is harmless.
    a, ghost = n("a"), n("ghost")
    refs, _ = refs_of(graph({a: [ghost]}))
    assert unreachable([a], refs, [a]) == []
