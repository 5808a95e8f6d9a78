"""Search, similarity, verification and k-NN classification over one collection's catalogue.

The answers' semantics: distances as the card defines them (``service.index``), the vote of
``trainer.knn.vote`` (the trainer's kNN accuracy uses the same function), and the card's calibrated
threshold as the default for "same" and for "unknown".
"""

from __future__ import annotations

from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool

from service.catalogue import Catalogue, Runtime
from service.errors import ErrorCode, ServiceError
from service.index import pair_distance, similarity
from service.schemas import IdRef, QueryItem, raw_input
from service.state import Service
from trainer.knn import Weighting, vote


async def query_embeddings(
    service: Service, catalogue: Catalogue, runtime: Runtime, queries: list[QueryItem]
) -> np.ndarray:
    """Embeddings for query items: stored ones for ``{"id": ...}``, the batcher for the rest."""
    out = np.empty((len(queries), runtime.encoder.card.embedding_dim), dtype=np.float32)
    ids = [item.id for item in queries if isinstance(item, IdRef)]
    if ids:
        stored = await run_in_threadpool(catalogue.stored_embeddings, runtime, ids)
        for i, item in enumerate(queries):
            if isinstance(item, IdRef):
                out[i] = stored[item.id]
    fresh = [(i, raw_input(item)) for i, item in enumerate(queries) if not isinstance(item, IdRef)]
    if fresh:
        out[[i for i, _ in fresh]] = await service.embed(runtime, [raw for _, raw in fresh])
    return out


def search(
    catalogue: Catalogue, runtime: Runtime, query: np.ndarray, k: int, label: str | None
) -> dict[str, Any]:
    """The k nearest items (optionally only those with ``label``), with their metadata."""
    found = catalogue.nearest(runtime, query, k, label)
    if found is None:
        return {"model": runtime.model_id, "neighbors": []}  # no item has this label
    dist, keys = found
    rows = catalogue.rows_by_key(keys, with_metadata=True)
    sims = similarity(runtime.encoder.card.distance, dist[0])
    neighbors = [
        {"id": rows[key][0], "label": rows[key][1], "distance": d, "similarity": s, "metadata": rows[key][2]}
        for key, d, s in zip(keys[0].tolist(), dist[0].tolist(), sims.tolist(), strict=True)
        if key in rows  # -1 pads missing results; a row deleted meanwhile is skipped
    ]
    return {"model": runtime.model_id, "neighbors": neighbors}


def classify(
    catalogue: Catalogue,
    runtime: Runtime,
    emb: np.ndarray,
    k: int,
    weighting: Weighting,
    threshold: float | None,
) -> dict[str, Any]:
    """A label per query by the vote of its k nearest labelled items (unknown if none is near enough)."""
    found = catalogue.nearest(runtime, emb, k)
    assert found is not None
    dist, keys = found
    rows = catalogue.rows_by_key(keys, with_metadata=False)
    predictions = []
    for row_keys, row_dist in zip(keys.tolist(), dist.tolist(), strict=True):
        neighbors = [
            {"id": rows[key][0], "label": rows[key][1], "distance": d}
            for key, d in zip(row_keys, row_dist, strict=True)
            if key in rows
        ]
        result = vote(
            [n["label"] for n in neighbors], [n["distance"] for n in neighbors], weighting, threshold
        )
        predictions.append(
            {
                "label": result.label,
                "confidence": result.confidence,
                "votes": result.votes,
                "neighbors": neighbors,
                "unknown": result.unknown,
            }
        )
    return {"model": runtime.model_id, "predictions": predictions}


def default_threshold(runtime: Runtime, asked: float | None, *, required: bool) -> float | None:
    """The request's threshold, else the card's calibrated one; 409 when required and there is none."""
    if asked is not None:
        return asked
    card = runtime.encoder.card
    if card.threshold is not None:
        return card.threshold.distance
    if required:
        raise ServiceError(
            ErrorCode.CONFLICT,
            f"model {card.model_id} has no calibrated threshold; pass 'threshold' (a distance)",
        )
    return None


def pair(runtime: Runtime, emb: np.ndarray) -> tuple[float, float]:
    """(distance, similarity) of the two embeddings of a pair request."""
    kind = runtime.encoder.card.distance
    d = pair_distance(kind, emb[0], emb[1])
    return d, float(similarity(kind, np.float64(d)))
