"""Background loops over every collection: following other API replicas (``--sync-interval``), and
keeping each index in shape (``run_index_loop``).

Following other replicas: each replica keeps its own FAISS indexes; the tables are the truth they
share. Every interval a replica catches up, in O(changes) (``Catalogue.follow``): rows added elsewhere
are found by key above what it has seen, deletions in the removals log, another replica's activation on
the collection row, and collections created or deleted elsewhere in the collections table. Between
passes a replica answers from its own view: a row deleted elsewhere can still be a neighbour until the
next pass drops its key.
"""

from __future__ import annotations

import logging
import threading
import time

from service.collections import Collections

logger = logging.getLogger(__name__)


def run_sync_loop(collections: Collections, stop: threading.Event, interval: float) -> None:
    """Thread body: ``collections.follow()`` every ``interval`` seconds until ``stop`` is set."""
    while not stop.wait(interval):
        started = time.monotonic()
        try:
            collections.follow()
        except Exception:  # noqa: BLE001 - keep following; the next pass starts from the tables again
            logger.exception("catching up with other replicas failed")
        if time.monotonic() - started > interval:
            logger.warning("catching up with other replicas took %.1f s", time.monotonic() - started)


def run_index_loop(collections: Collections, stop: threading.Event, interval: float = 1.0) -> None:
    """Thread body: every ``interval`` seconds, rebuild the indexes that ask for it (in the background, see
    ``Catalogue.maintain``) and sample the approximate ones' recall against exact search."""
    while not stop.wait(interval):
        for catalogue in collections.all():
            try:
                catalogue.maintain()
                catalogue.sample_recall()
            except Exception:  # noqa: BLE001 - keep serving with the index as it is
                logger.exception("collection %s: index maintenance failed", catalogue.name)
