"""FAISS wrapper: int64 keys (the items table's primary key), distances in the card's terms, snapshots.

Every index is bound to one model id, and searches return item keys. Kinds:

* ``flat``: exact; ``IndexIDMap2`` over ``IndexFlatIP`` on unit vectors for cosine, ``IndexFlatL2`` for
  euclidean.
* ``ivf``: ``IndexIVFFlat`` with an HNSW coarse quantizer (assigning a vector to its cell costs
  O(log nlist), so adding stays cheap at a million items), holding the keys itself and a hash-table
  direct map (so filtered searches and rebuilds can read vectors back).
* ``hnsw``: ``IndexHNSWFlat``. HNSW cannot remove vectors, so deletions become tombstones that searches
  skip; the graph is rebuilt without them once they pass 10%.
* ``auto`` (the default setting): ``flat`` while the index holds fewer than ``auto_threshold`` vectors,
  then ``ivf``, with ``nlist`` chosen for the size (about 4·√n) and retrained once the index has grown
  4× since; ``nprobe`` is tuned on a sample until recall@10 against exact search reaches the target.

An index that should change kind (or be retrained, or compacted) says so in ``needs_rebuild``; the
catalogue builds the replacement off the lock (``build``: train, add, tune), replays what changed
meanwhile (``begin_journal`` / ``install``) and swaps it in under its write lock, so reads and writes
never wait for training. The live recall is measured on a sample against exact search (``sample_recall``).

Distances: cosine gives ``distance = 1 - cos`` and ``similarity = cos``; euclidean gives the L2 distance
(not squared) and ``similarity = 1 / (1 + distance)``.

FAISS is not safe for concurrent add and search: the catalogue that owns an index (``service.catalogue``)
holds its readers-writer lock around every call.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

logger = logging.getLogger(__name__)

IVF_POINTS_PER_CELL = 39  # FAISS warns below this many training points per centroid
IVF_TRAIN_PER_CELL = 64  # training sample: enough for k-means, bounded in time
IVF_RETRAIN_GROWTH = 4.0  # auto: retrain (more cells) once the index holds 4x what it was trained on
NPROBE_CANDIDATES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
TOMBSTONE_REBUILD_FRACTION = 0.1
FILTER_EXACT_LIMIT = 20_000  # a filter this small reads its vectors back; larger ones scan every IVF cell
SMALL_QUERY_BATCH = 16  # below this many queries, one OpenMP thread beats waking a team
RECALL_K = 10
_OMP_THREADS = faiss.omp_get_max_threads()


@dataclass(frozen=True)
class IndexParams:
    kind: str = "auto"  # auto | flat | hnsw | ivf
    hnsw_m: int = 32
    hnsw_ef_search: int = 64
    ivf_nlist: int = 0  # 0: chosen for the size (auto), else fixed
    ivf_nprobe: int = 0  # 0: tuned to recall_target on a sample, else fixed
    auto_threshold: int = 50_000
    recall_target: float = 0.97
    recall_sample: int = 200


def _keys(keys: Any) -> np.ndarray:
    return np.ascontiguousarray(keys, dtype=np.int64).reshape(-1)


def _vecs(vectors: Any, dim: int) -> np.ndarray:
    return np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, dim)


def nlist_for(n: int) -> int:
    """About 4·√n cells, a power of two between 64 and 16,384 (FAISS's rule of thumb for IVF)."""
    return int(min(16_384, max(64, 2 ** round(math.log2(max(4 * math.sqrt(max(n, 1)), 1))))))


@dataclass
class Built:
    """A replacement index made off the lock, waiting to be installed."""

    index: Any
    kind: str
    nprobe: int
    trained_size: int
    recall: float | None


@dataclass
class _Journal:
    """Changes made to the live index while its replacement was being built, replayed on install."""

    ops: list[tuple[str, np.ndarray, np.ndarray | None]] = field(default_factory=list)


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
        self.kind = self.wanted_kind(0)
        self.nprobe = 0  # ivf: cells visited per search
        self.trained_size = 0  # ivf: vectors it was trained on (auto retrains at 4x growth)
        self.recall: float | None = None  # the last sampled recall@10 against exact search (None: exact)
        self._recall_hits = self._recall_total = 0  # the sample being gathered
        self._index = self._empty(self.kind)
        self._journal: _Journal | None = None
        self.from_snapshot = False  # loaded from disk (its version 0 is what the snapshot holds)

    # -- what kind it should be ----------------------------------------------------------------------
    def wanted_kind(self, n: int) -> str:
        p = self.params
        if p.kind == "auto":
            return "ivf" if n >= p.auto_threshold else "flat"
        if p.kind == "ivf" and n < IVF_POINTS_PER_CELL * (p.ivf_nlist or nlist_for(n)):
            return "flat"  # an IVF index needs enough vectors to train on
        return p.kind

    def needs_rebuild(self) -> bool:
        """A kind change due to the size, an auto IVF grown 4x since training, or HNSW tombstones past 10%."""
        n = self.size
        if self.wanted_kind(n) != self.kind:
            return True
        if self.kind == "ivf" and self.params.kind == "auto" and n >= IVF_RETRAIN_GROWTH * self.trained_size:
            return True
        return len(self.tombstones) > TOMBSTONE_REBUILD_FRACTION * max(self._index.ntotal, 1)

    # -- construction --------------------------------------------------------------------------------
    def _empty(self, kind: str) -> Any:
        if kind == "hnsw":
            return faiss.IndexIDMap2(faiss.IndexHNSWFlat(self.dim, self.params.hnsw_m, self.metric))
        return faiss.IndexIDMap2(faiss.IndexFlat(self.dim, self.metric))

    def _new_ivf(self, vectors: np.ndarray) -> Any:
        nlist = self.params.ivf_nlist or nlist_for(len(vectors))
        nlist = max(1, min(nlist, len(vectors) // IVF_POINTS_PER_CELL or 1))
        quantizer = faiss.IndexHNSWFlat(self.dim, 32, self.metric)
        ivf = faiss.IndexIVFFlat(quantizer, self.dim, nlist, self.metric)
        ivf.cp.min_points_per_centroid = 1  # no warning spam: the sample is sized on purpose
        rng = np.random.default_rng(0)
        sample = vectors
        if len(vectors) > IVF_TRAIN_PER_CELL * nlist:
            sample = vectors[np.sort(rng.choice(len(vectors), IVF_TRAIN_PER_CELL * nlist, replace=False))]
        ivf.train(np.ascontiguousarray(sample))
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # vectors by key: filters, rebuilds
        return ivf

    def build(self, keys: np.ndarray, vectors: np.ndarray) -> Built:
        """A replacement holding exactly these vectors, of the kind their number calls for (no lock needed:
        nothing here touches the live index)."""
        keys, vectors = _keys(keys), _vecs(vectors, self.dim)
        kind = self.wanted_kind(len(keys))
        index = self._new_ivf(vectors) if kind == "ivf" else self._empty(kind)
        if len(keys):
            index.add_with_ids(vectors, keys)
        nprobe, recall = 0, None
        if kind == "ivf":
            nprobe, recall = self._tune_nprobe(index, keys, vectors)
            logger.info(
                "built an IVF index of %d vectors: nlist %d, nprobe %d, recall@%d %.3f",
                len(keys),
                index.nlist,
                nprobe,
                RECALL_K,
                recall,
            )
        return Built(index, kind, nprobe, len(keys) if kind == "ivf" else 0, recall)

    def _tune_nprobe(self, ivf: Any, keys: np.ndarray, vectors: np.ndarray) -> tuple[int, float]:
        """The smallest nprobe whose sampled recall@10 reaches the target (or the setting, if fixed)."""
        queries = vectors[self._sample(len(keys), seed=1)]
        exact = _exact_neighbours(ivf, queries)
        candidates = [self.params.ivf_nprobe] if self.params.ivf_nprobe else list(NPROBE_CANDIDATES)
        recall = 0.0
        for nprobe in candidates:
            nprobe = min(nprobe, ivf.nlist)
            recall = _recall(ivf, queries, exact, nprobe)
            if recall >= self.params.recall_target or nprobe >= ivf.nlist:
                return nprobe, recall
        return candidates[-1], recall

    def _sample(self, n: int, seed: int | None = None) -> np.ndarray:
        """Positions of up to ``recall_sample`` stored vectors used as recall queries."""
        return np.random.default_rng(seed).choice(n, min(self.params.recall_sample, n), replace=False)

    def begin_journal(self) -> None:
        """From now on, record every add and remove, to replay on the replacement being built."""
        self._journal = _Journal()

    def install(self, built: Built) -> None:
        """Swap in a replacement (under the write lock), replaying what changed since ``begin_journal``."""
        journal, self._journal = self._journal, None
        for op, keys, vectors in journal.ops if journal else []:
            if op == "add":
                built.index.add_with_ids(vectors, keys)
            else:
                built.index.remove_ids(keys)
        self._index, self.kind, self.nprobe = built.index, built.kind, built.nprobe
        self.trained_size, self.recall = built.trained_size, built.recall
        self.tombstones = set()
        self.version += 1

    def abandon_journal(self) -> None:
        self._journal = None

    def rebuild(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Replace the contents with exactly these vectors at once (an index nobody reads yet)."""
        self.install(self.build(keys, vectors))

    def contents(self) -> tuple[np.ndarray, np.ndarray]:
        """All live (key, vector) pairs, read back from the index itself (rebuilds need no database)."""
        if self.kind == "ivf":
            keys = self.keys()
            return keys, self._reconstruct(keys)
        keys = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        base = self._index.index
        vectors = base.reconstruct_n(0, base.ntotal) if base.ntotal else np.zeros((0, self.dim), np.float32)
        if self.tombstones:
            live = ~np.isin(keys, np.fromiter(self.tombstones, np.int64))
            keys, vectors = keys[live], vectors[live]
        return keys, vectors

    def _reconstruct(self, keys: np.ndarray) -> np.ndarray:
        if not len(keys):
            return np.zeros((0, self.dim), np.float32)
        return self._index.reconstruct_batch(_keys(keys))

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
            if self._journal is not None:
                self._journal.ops.append(("add", keys, vectors))

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
        if self._journal is not None:
            self._journal.ops.append(("remove", keys, None))

    # -- search ------------------------------------------------------------------------------------
    def search(
        self, queries: np.ndarray, k: int, only: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """k nearest keys and distances per query (``-1`` keys pad missing results); ``only``: key subset.

        A search restricted to ``only`` (a label filter) is exact whatever the kind: an approximate
        index would visit too few cells to find the members of a small subset.
        """
        queries = _vecs(queries, self.dim)
        # per calling thread: small searches single-threaded, big batches (classify) use the team
        faiss.omp_set_num_threads(1 if len(queries) < SMALL_QUERY_BATCH else _OMP_THREADS)
        if only is not None and self.kind == "ivf" and len(only) <= FILTER_EXACT_LIMIT:
            return self._search_subset(queries, k, _keys(only))
        selector = None
        if only is not None:
            selector = faiss.IDSelectorBatch(_keys(only))  # live keys from the database: no tombstones
        elif self.tombstones:
            dead = faiss.IDSelectorBatch(np.fromiter(self.tombstones, np.int64))
            selector = faiss.IDSelectorNot(dead)
        params: Any = None
        if self.kind == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=max(self.params.hnsw_ef_search, k))
        elif self.kind == "ivf":  # a filter too large for the exact path visits every cell: still exact
            params = faiss.SearchParametersIVF(nprobe=self._index.nlist if only is not None else self.nprobe)
        if selector is not None:
            params = params or faiss.SearchParameters()
            params.sel = selector
        scores, keys = self._index.search(queries, k, params=params)
        return self.to_distance(scores), keys

    def _search_subset(self, queries: np.ndarray, k: int, only: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        try:
            vectors = self._reconstruct(only)
        except RuntimeError:  # a key not indexed here (yet): keep only those that are
            only = only[np.isin(only, self.keys())]
            vectors = self._reconstruct(only)
        flat = faiss.IndexIDMap2(faiss.IndexFlat(self.dim, self.metric))
        if len(only):
            flat.add_with_ids(vectors, only)
        scores, keys = flat.search(queries, k)
        return self.to_distance(scores), keys

    def sample_recall(self, queries: int) -> float | None:
        """Check ``queries`` more stored vectors against exact search; once ``recall_sample`` of them are in,
        publish recall@10 in ``self.recall`` (a few queries at a time: an exact search at a million
        vectors takes ~50 ms, and the caller holds the read lock). None for exact kinds."""
        if self.kind != "ivf" or self.size == 0:
            return None
        keys = self.keys()
        sample = self._reconstruct(keys[np.random.default_rng().choice(len(keys), queries)])
        hits, total = _hits(self._index, sample, _exact_neighbours(self._index, sample), self.nprobe)
        self._recall_hits, self._recall_total = self._recall_hits + hits, self._recall_total + total
        if self._recall_total >= self.params.recall_sample * RECALL_K:
            self.recall = self._recall_hits / self._recall_total
            self._recall_hits = self._recall_total = 0
        return self.recall

    def to_distance(self, scores: np.ndarray) -> np.ndarray:
        """FAISS scores (inner product or squared L2) to the card's distance."""
        if self.distance == "cosine":
            return np.clip(1.0 - scores, 0.0, 2.0)
        return np.sqrt(np.maximum(scores, 0.0))

    def describe(self) -> dict[str, Any]:
        """What /info shows: kind, size, and for IVF its cells, nprobe and the sampled recall."""
        out: dict[str, Any] = {"type": self.kind, "size": self.size}
        if self.kind == "ivf":
            out.update(nlist=int(self._index.nlist), nprobe=self.nprobe, recall_at_10=self.recall)
        return out

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
            "nprobe": self.nprobe,
            "trained_size": self.trained_size,
            "recall": self.recall,
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
                f"snapshot {meta_file.name} was made for {meta['model_id']}/{meta['dim']}/{meta['distance']}"
            )
        raw = faiss.read_index(str(index_file))  # already downcast; downcasting again would free it early
        expected = faiss.IndexIVFFlat if meta["kind"] == "ivf" else faiss.IndexIDMap2
        if not isinstance(raw, expected) or raw.d != dim:
            raise ValueError(f"snapshot {index_file.name} is not a {meta['kind']} index of dimension {dim}")
        index = cls(model_id, dim, distance, params)
        index._index, index.kind, index.from_snapshot = raw, meta["kind"], True
        index.tombstones = set(meta.get("tombstones", []))
        if index.kind == "ivf":
            index.nprobe = int(meta.get("nprobe") or params.ivf_nprobe or 16)
            index.trained_size = int(meta.get("trained_size") or raw.ntotal)
            index.recall = meta.get("recall")
        return index


def _exact_neighbours(ivf: Any, queries: np.ndarray) -> np.ndarray:
    """Each query's exact top-k keys (every cell visited); the first is the query's own key."""
    k = min(RECALL_K + 1, int(ivf.ntotal))
    return ivf.search(queries, k, params=faiss.SearchParametersIVF(nprobe=ivf.nlist))[1]


def _hits(ivf: Any, queries: np.ndarray, exact: np.ndarray, nprobe: int) -> tuple[int, int]:
    """(found, wanted): how much of each query's exact top-10 (its own key left out) the search finds."""
    _, found = ivf.search(queries, exact.shape[1], params=faiss.SearchParametersIVF(nprobe=nprobe))
    hits = total = 0
    for want, got in zip(exact, found, strict=True):
        want_set = set(want[1:].tolist()) - {-1}  # the first hit is the query itself
        hits += len(want_set & set(got.tolist()))
        total += len(want_set)
    return hits, total


def _recall(ivf: Any, queries: np.ndarray, exact: np.ndarray, nprobe: int) -> float:
    hits, total = _hits(ivf, queries, exact, nprobe)
    return hits / total if total else 1.0


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
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # per process: replicas never share a temp
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
