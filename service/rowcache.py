"""Item id and label by FAISS key, kept in memory so /classify answers without a database query.

A key names one row for good: keys are never reused (AUTOINCREMENT on SQLite, a sequence elsewhere)
and a row's id and label never change in place (an upsert is a new row under a new key), so a cached
entry can never go stale; deleted keys are dropped only to free memory. The cache is bounded and
evicts its oldest entries first; a miss costs one query, exactly what every lookup cost without it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from itertools import islice


class RowCache:
    """Bounded key -> (id, label) map, safe to share between the request threads."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._rows: dict[int, tuple[str, str | None]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._rows)

    def get_many(self, keys: Iterable[int]) -> tuple[dict[int, tuple[str, str | None]], list[int]]:
        """(the cached rows among ``keys``, the keys that were not cached)."""
        rows = self._rows
        found, missing = {}, []
        for key in keys:
            row = rows.get(key)
            if row is None:
                missing.append(key)
            else:
                found[key] = row
        return found, missing

    def put_many(self, items: Iterable[tuple[int, tuple[str, str | None]]]) -> None:
        if self.capacity <= 0:
            return
        with self._lock:
            rows = self._rows
            rows.update(items)
            excess = len(rows) - self.capacity
            if excess > 0:  # dicts keep insertion order: the first keys are the oldest
                for key in list(islice(rows, excess)):
                    del rows[key]

    def discard(self, keys: Iterable[int]) -> None:
        with self._lock:
            for key in keys:
                self._rows.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()
