"""FAISS wrapper: int64 keys (the items table's primary key), distances in the card's terms, snapshots.

Every index is bound to one model id, and searches return item keys:

* ``flat``: exact; ``IndexIDMap2`` over ``IndexFlatIP`` on unit vectors for cosine, ``IndexFlatL2`` for
  euclidean.
* ``hnsw``: ``IndexHNSWFlat`` with the same metric. HNSW cannot remove vectors, so deletions become
  tombstones that searches skip; the graph is rebuilt without them once they pass 10% (at snapshot time).
* ``ivf``: ``IndexIVFFlat`` holding the keys itself (IndexIDMap2 over IVF mis-maps ids after a removal).
  It must be trained, so it starts as flat and becomes IVF (with a log line) once it holds
  ``39 * nlist`` vectors, checked at build time and at every snapshot.

Distances: cosine gives ``distance = 1 - cos`` and ``similarity = cos``; euclidean gives the L2 distance
(not squared) and ``similarity = 1 / (1 + distance)``.

FAISS is not safe for concurrent add and search: the catalogue that owns an index (``service.catalogue``)
holds its readers-writer lock around every call.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

logger = logging.getLogger(__name__)

IVF_POINTS_PER_CELL = 39  # FAISS warns below this many training points per centroid
TOMBSTONE_REBUILD_FRACTION = 0.1
SMALL_QUERY_BATCH = 16  # below this many queries, one OpenMP thread beats waking a team
_OMP_THREADS = faiss.omp_get_max_threads()


@dataclass(frozen=True)
class IndexParams:
    kind: str = "flat"  # flat | hnsw | ivf
    hnsw_m: int = 32
    hnsw_ef_search: int = 64
    ivf_nlist: int = 256
    ivf_nprobe: int = 16


def _keys(keys: Any) -> np.ndarray:
    return np.ascontiguousarray(keys, dtype=np.int64).reshape(-1)


def _vecs(vectors: Any, dim: int) -> np.ndarray:
    return np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, dim)


class VectorIndex:
    """A FAISS index of one model's embeddings, keyed by item key; its catalogue holds the lock."""

    def __init__(self, model_id: str, dim: int, distance: str, params: IndexParams) -> None:
        self.model_id = model_id
        self.dim = dim
        self.distance = distance
        self.params = params
        self.metric = faiss.METRIC_INNER_PRODUCT if distance == "cosine" else faiss.METRIC_L2
        self.version = 0  # bumped by every change; snapshots skip an unchanged index
        self.tombstones: set[int] = set()  # HNSW only: removed keys still in the graph
        self.kind = self._buildable_kind(0)
        self._index = self._new(self.kind)

    # -- construction ------------------------------------------------------------------------------
    def _buildable_kind(self, n: int) -> str:
        if self.params.kind == "ivf" and n < IVF_POINTS_PER_CELL * self.params.ivf_nlist:
            return "flat"
        return self.params.kind

    def _new(self, kind: str, train: np.ndarray | None = None) -> Any:
        if kind == "ivf":
            # IVF stores ids itself; under IndexIDMap2 its removals would scramble the id mapping.
            quantizer = faiss.IndexFlat(self.dim, self.metric)
            ivf = faiss.IndexIVFFlat(quantizer, self.dim, self.params.ivf_nlist, self.metric)
            ivf.train(train)
            ivf.nprobe = self.params.ivf_nprobe
            return ivf
        if kind == "hnsw":
            return faiss.IndexIDMap2(faiss.IndexHNSWFlat(self.dim, self.params.hnsw_m, self.metric))
        return faiss.IndexIDMap2(faiss.IndexFlat(self.dim, self.metric))

    def rebuild(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Replace the contents with exactly these vectors, choosing the index type for their number."""
        keys, vectors = _keys(keys), _vecs(vectors, self.dim)
        kind = self._buildable_kind(len(keys))
        if self.params.kind == "ivf" and kind == "flat" and len(keys):
            logger.info(
                "IVF needs %d vectors to train (39 x nlist); %d so far: using a flat index meanwhile",
                IVF_POINTS_PER_CELL * self.params.ivf_nlist,
                len(keys),
            )
        index = self._new(kind, train=vectors if kind == "ivf" else None)
        if len(keys):
            index.add_with_ids(vectors, keys)
        self._index, self.kind = index, kind
        self.tombstones = set()
        self.version += 1

    def contents(self) -> tuple[np.ndarray, np.ndarray]:
        """All live (key, vector) pairs of a flat or HNSW index, so rebuilds need no database."""
        assert self.kind != "ivf", "an IVF index is never rebuilt from itself"
        keys = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        base = self._index.index
        vectors = base.reconstruct_n(0, base.ntotal) if base.ntotal else np.zeros((0, self.dim), np.float32)
        if self.tombstones:
            live = ~np.isin(keys, np.fromiter(self.tombstones, np.int64))
            keys, vectors = keys[live], vectors[live]
        return keys, vectors

    def needs_maintenance(self) -> bool:
        """A flat stand-in that could now be IVF, or HNSW tombstones past 10% of the graph."""
        upgrade = self.kind == "flat" and self._buildable_kind(self.size) == "ivf"
        return upgrade or len(self.tombstones) > TOMBSTONE_REBUILD_FRACTION * max(self._index.ntotal, 1)

    def maintain(self) -> bool:
        """Rebuild when ``needs_maintenance``; True when rebuilt."""
        if not self.needs_maintenance():
            return False
        logger.info("rebuilding the %s index of %d vectors as %s", self.kind, self.size, self.params.kind)
        self.rebuild(*self.contents())
        return True

    # -- contents ----------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return int(self._index.ntotal) - len(self.tombstones)

    def keys(self) -> np.ndarray:
        """Keys of the live vectors (reconciliation compares them with the database)."""
        if self.kind == "ivf":
            inv = self._index.invlists
            parts = [
                faiss.rev_swig_ptr(inv.get_ids(i), inv.list_size(i)).copy()
                for i in range(inv.nlist)
                if inv.list_size(i)
            ]
            return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
        keys = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        if self.tombstones:
            keys = keys[~np.isin(keys, np.fromiter(self.tombstones, np.int64))]
        return keys

    def add(self, keys: Any, vectors: Any) -> None:
        keys, vectors = _keys(keys), _vecs(vectors, self.dim)
        if len(keys):
            self._index.add_with_ids(vectors, keys)
            self.version += 1

    def remove(self, keys: Any) -> None:
        keys = _keys(keys)
        if not len(keys):
            return
        if self.kind == "hnsw":  # HNSW cannot remove: tombstone (searches skip them)
            present = np.isin(keys, faiss.vector_to_array(self._index.id_map))
            self.tombstones.update(int(k) for k in keys[present])
        else:
            self._index.remove_ids(keys)
        self.version += 1

    # -- search ------------------------------------------------------------------------------------
    def search(
        self, queries: np.ndarray, k: int, only: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """k nearest keys and distances per query (``-1`` keys pad missing results); ``only``: key subset."""
        queries = _vecs(queries, self.dim)
        selector = None
        if only is not None:
            selector = faiss.IDSelectorBatch(_keys(only))  # live keys from the database: no tombstones
        elif self.tombstones:
            dead = faiss.IDSelectorBatch(np.fromiter(self.tombstones, np.int64))
            selector = faiss.IDSelectorNot(dead)
        params: Any = None
        if self.kind == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=max(self.params.hnsw_ef_search, k))
        elif self.kind == "ivf":
            params = faiss.SearchParametersIVF(nprobe=self.params.ivf_nprobe)
        if selector is not None:
            params = params or faiss.SearchParameters()
            params.sel = selector
        # per calling thread: small searches single-threaded, big batches (classify) use the team
        faiss.omp_set_num_threads(1 if len(queries) < SMALL_QUERY_BATCH else _OMP_THREADS)
        scores, keys = self._index.search(queries, k, params=params)
        return self.to_distance(scores), keys

    def to_distance(self, scores: np.ndarray) -> np.ndarray:
        """FAISS scores (inner product or squared L2) to the card's distance."""
        if self.distance == "cosine":
            return np.clip(1.0 - scores, 0.0, 2.0)
        return np.sqrt(np.maximum(scores, 0.0))

    # -- persistence -------------------------------------------------------------------------------
    def serialize(self) -> tuple[np.ndarray, dict[str, Any]]:
        """Bytes and metadata of the current state; call under the read lock, write out without it."""
        meta = {
            "model_id": self.model_id,
            "dim": self.dim,
            "distance": self.distance,
            "kind": self.kind,
            "size": self.size,
            "max_key": int(self.keys().max(initial=-1)),
            "tombstones": sorted(self.tombstones),
            "version": self.version,
        }
        return faiss.serialize_index(self._index), meta

    @classmethod
    def load(
        cls, directory: Path, model_id: str, dim: int, distance: str, params: IndexParams
    ) -> VectorIndex:
        """Load this model's snapshot; raises when missing, unreadable, or made for something else."""
        index_file, meta_file = snapshot_paths(directory, model_id)
        meta = json.loads(meta_file.read_text())
        if (meta["model_id"], meta["dim"], meta["distance"]) != (model_id, dim, distance):
            raise ValueError(
                f"snapshot {meta_file} was made for {meta['model_id']}/{meta['dim']}/{meta['distance']}"
            )
        raw = faiss.read_index(str(index_file))  # already downcast; downcasting again would free it early
        expected = faiss.IndexIVFFlat if meta["kind"] == "ivf" else faiss.IndexIDMap2
        if not isinstance(raw, expected) or raw.d != dim:
            raise ValueError(f"snapshot {index_file} is not a {meta['kind']} index of dimension {dim}")
        index = cls(model_id, dim, distance, params)
        index._index, index.kind = raw, meta["kind"]
        index.tombstones = set(meta.get("tombstones", []))
        if index.kind == "ivf":
            raw.nprobe = params.ivf_nprobe
        return index


def similarity(distance: str, d: np.ndarray) -> np.ndarray:
    """cosine: ``1 - d`` (the cosine itself); euclidean: ``1 / (1 + d)``."""
    return 1.0 - d if distance == "cosine" else 1.0 / (1.0 + d)


def pair_distance(distance: str, a: np.ndarray, b: np.ndarray) -> float:
    """Distance between two embeddings as the index would report it (cosine rows are unit length)."""
    if distance == "cosine":
        return float(np.clip(1.0 - np.dot(a.astype(np.float64), b.astype(np.float64)), 0.0, 2.0))
    return float(np.linalg.norm(a.astype(np.float64) - b.astype(np.float64)))


def snapshot_paths(directory: Path, model_id: str) -> tuple[Path, Path]:
    """Index and metadata files; the model id in the names keeps two models' files from pairing up."""
    return directory / f"{model_id}.faiss", directory / f"{model_id}.json"


def _write_atomic(path: Path, data: bytes | memoryview) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_snapshot(directory: Path, blob: np.ndarray, meta: dict[str, Any]) -> None:
    """Write index then metadata, each to a temp file, fsynced and renamed into place."""
    directory.mkdir(parents=True, exist_ok=True)
    index_file, meta_file = snapshot_paths(directory, meta["model_id"])
    _write_atomic(index_file, memoryview(blob))
    _write_atomic(meta_file, json.dumps(meta).encode())
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the renames themselves durable
    finally:
        os.close(dir_fd)
