"""Email threads for a whole run: the mapping `responses.assign_threads` returns, with a fraction of its
temporary memory.

`assign_threads` makes a namespaced string node per email, conversation id and message id (three new
strings and three dictionary entries per email); over a year of mail that is the KPI job's memory peak.
Here the only nodes are the emails themselves (integers in an array): a conversation or message id is
represented by the first email that names it, and every later email naming it joins that email's
group. That is the same connectivity, so the same threads, each named by its smallest email key; the
property test in tests/analytics/test_memory.py checks the two agree.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from typing import cast

from relinsights.analytics.activities import Activity, Kind


def assign_threads_compact(activities: Iterable[Activity]) -> dict[str, str]:
    """Email key -> thread id (the smallest email key of its thread), as `responses.assign_threads`."""
    parent = array("q")

    def find(x: int) -> int:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    def union(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    # Email key -> its node; turned into key -> thread id in place at the end (no second big dict).
    nodes: dict[str, int | str] = {}
    conversations: dict[str, int] = {}
    message_ids: dict[str, int] = {}
    for act in activities:
        if act.kind is not Kind.EMAIL:
            continue
        node = nodes.get(act.key)
        if node is None:
            node = nodes[act.key] = len(parent)
            parent.append(node)
        assert isinstance(node, int)
        for conv in act.conversations:
            union(node, conversations.setdefault(conv, node))
        if act.message_id:
            union(node, message_ids.setdefault(act.message_id, node))
        for ref in act.reply_to:
            union(node, message_ids.setdefault(ref, node))
    conversations.clear()
    message_ids.clear()
    # Name each thread by its smallest email key.
    names: list[str | None] = [None] * len(parent)
    for key, node in nodes.items():
        root = find(cast(int, node))
        name = names[root]
        if name is None or key < name:
            names[root] = key
    for key, node in nodes.items():
        nodes[key] = cast(str, names[find(cast(int, node))])
    return cast(dict[str, str], nodes)
