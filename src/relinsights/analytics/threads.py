"""Email threads for a whole run: the mapping `responses.assign_threads` returns, with a fraction of its
temporary memory.

`assign_threads` makes a namespaced string node per email, conversation id and message id (three new
strings and three dictionary entries per email); over a year of mail that was the KPI job's memory
peak. Here the only nodes are the emails' own keys (no new object at all): a conversation or message
id is represented by the first email that names it, and every later email naming it joins that email's
group, which is the same connectivity, so the same threads. Groups are joined under their smaller key,
so each root is its thread's smallest email key, the thread's name: the union-find's parent dictionary
becomes the result in place. The property test in tests/analytics/test_memory.py checks the two agree.
"""

from __future__ import annotations

from collections.abc import Iterable

from relinsights.analytics.activities import Activity, Kind


def assign_threads_compact(activities: Iterable[Activity]) -> dict[str, str]:
    """Email key -> thread id (the smallest email key of its thread), as `responses.assign_threads`."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    emails = [a for a in activities if a.kind is Kind.EMAIL]
    # An email's own message id only joins it to an email that refers to it, or to another email with
    # that id: the builder keys an email by its id ("email:<id>"), so all of those are one node already,
    # and the id needs no entry unless it is referred to or some email with it has another key.
    referenced = {ref for a in emails for ref in a.reply_to}
    conversations: dict[str, str] = {}
    message_ids: dict[str, str] = {}
    for act in emails:
        key = act.key
        if key not in parent:
            parent[key] = key
        for conv in act.conversations:
            union(key, conversations.setdefault(conv, key))
        mid = act.message_id
        if not mid:
            pass
        elif mid in referenced:
            union(key, message_ids.setdefault(mid, key))
        elif _keyed_by(key, mid):
            other = message_ids.get(mid)  # an email with this id and another key, seen before
            if other is not None:
                union(key, other)
        else:
            union(key, message_ids.setdefault(mid, key))
            own = "email:" + mid  # the email keyed by this id, if seen before
            if own in parent:
                union(key, own)
        for ref in act.reply_to:
            union(key, message_ids.setdefault(ref, key))
    del emails, referenced, conversations, message_ids
    for key in parent:  # every root is the smallest key of its group: the parent of all becomes the thread
        parent[key] = find(key)
    return parent


def _keyed_by(key: str, message_id: str) -> bool:
    """key == "email:" + message_id, without making that string."""
    return len(key) == len(message_id) + 6 and key.startswith("email:") and key.endswith(message_id)
