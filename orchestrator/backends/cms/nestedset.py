"""Nested sets (Joomla's categories, menu items and assets): left and right numbers derived from the parent links.

A node's ``left`` comes before every node of its subtree and its ``right`` after them; a node at preorder
position n and depth d has ``left = root_left + 2n - d`` and ``right = left + 2 * size - 1`` (each earlier node
adds its left number, each earlier node that is not an ancestor its right one too). Children are ordered by the
order key they are given (Joomla's own rebuild() orders them by their current ``lft``), so a rebuild keeps the
order people set and only renumbers.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

Id = TypeVar("Id", bound=Hashable)


@dataclass(frozen=True)
class Node(Generic[Id]):
    """One row of a nested set: its id, its parent's id (None, 0 or a missing id for a root), and the key its
    siblings are ordered by."""

    id: Id
    parent: Id | None
    order: tuple = ()


def rebuild(nodes: Iterable[Node[Id]], root_left: int = 0) -> dict[Id, tuple[int, int, int]]:
    """Given the nodes of one table, return {id: (left, right, level)} numbering every tree depth first, roots
    in order one after another from root_left (Joomla numbers its root 0). Raise ValueError if the parent links
    hold a cycle."""
    nodes = list(nodes)
    known = {node.id for node in nodes}
    children: dict[Id, list[Node[Id]]] = {}
    roots = []
    for node in nodes:
        if node.parent in known and node.parent != node.id:
            children.setdefault(node.parent, []).append(node)
        else:
            roots.append(node)
    for group in (roots, *children.values()):
        group.sort(key=lambda n: (n.order, _sortable(n.id)))
    numbers: dict[Id, tuple[int, int, int]] = {}
    counter = root_left
    for root in roots:
        stack = [(root, 0, False)]
        while stack:
            node, level, closing = stack.pop()
            if closing:
                left, _, _ = numbers[node.id]
                numbers[node.id] = (left, counter, level)
                counter += 1
                continue
            numbers[node.id] = (counter, -1, level)
            counter += 1
            stack.append((node, level, True))
            stack.extend((child, level + 1, False) for child in reversed(children.get(node.id, ())))
    if len(numbers) != len(nodes):
        missing = sorted((_sortable(n.id) for n in nodes if n.id not in numbers))[:5]
        raise ValueError(f"parent links form a cycle (ids {', '.join(map(str, missing))} are no tree's)")
    return numbers


def _sortable(value: Hashable) -> tuple:
    return (0, value) if isinstance(value, int) else (1, str(value))


def problems(rows: Iterable[tuple[Hashable, Hashable | None, int, int]]) -> list[str]:
    """Given (id, parent, left, right) of every row, return what is wrong with the nested set: left not below
    right, overlapping ranges, a child outside its parent, numbers used twice. [] when it is valid."""
    rows = list(rows)
    by_id = {row[0]: row for row in rows}
    found = [f"{i}: left {left} is not below right {right}" for i, _, left, right in rows if left >= right]
    for i, parent, left, right in rows:
        if parent in by_id and parent != i:
            _, _, p_left, p_right = by_id[parent]
            if not p_left < left < right < p_right:
                found.append(f"{i}: ({left}, {right}) is not inside its parent {parent} ({p_left}, {p_right})")
    numbers = [n for _, _, left, right in rows for n in (left, right)]
    if len(numbers) != len(set(numbers)):
        found.append("a number is used twice")
    ordered = sorted(rows, key=lambda row: row[2])
    open_right: list[int] = []
    for i, _, left, right in ordered:  # ranges either nest or are apart: no partial overlap
        while open_right and open_right[-1] < left:
            open_right.pop()
        if open_right and right > open_right[-1]:
            found.append(f"{i}: ({left}, {right}) overlaps a range it starts inside")
        open_right.append(right)
    return found
