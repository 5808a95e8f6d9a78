"""Unit tests of the service's parts: k-NN vote, FAISS wrapper, lock, schemas, encoder, batcher, settings."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from pathlib import Path

import anyio
import faiss
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from service_helpers import REPO, make_settings, model_dir, png_b64
from sqlalchemy import text

from service.batcher import MicroBatcher
from service.config import Settings
from service.encoder import Encoder
from service.errors import ServiceError
from service.index import IndexParams, VectorIndex, pair_distance, write_snapshot
from service.rowcache import RowCache
from service.rwlock import RWLock
from service.schemas import CreateItemsRequest, EmbedRequest, SearchRequest
from service.tables import Base, make_engine, open_db
from trainer.card import CARD_FILE, CardError
from trainer.knn import vote

pytestmark = pytest.mark.timeout(60)


# -- k-NN vote: recomputed with a plain loop over explicit rules ----------------------------------------
def _vote_by_hand(labels, dists, weighting, threshold):
    voters = [(lab, d) for lab, d in zip(labels, dists, strict=True) if lab is not None]
    if not voters or (threshold is not None and min(d for _, d in voters) > threshold):
        return None, 0.0  # nothing known lies within the threshold
    zero = weighting == "distance" and any(d == 0 for _, d in voters)
    totals = {}
    for lab, d in voters:
        w = 1.0 if weighting == "uniform" else (float(d == 0) if zero else 1.0 / d)
        t = totals.setdefault(lab, [0.0, 0.0, len(totals)])
        t[0] += w
        t[1] += d
    best = None
    for lab, (v, s, first) in totals.items():
        if best is None or (-v, s, first) < (-totals[best][0], totals[best][1], totals[best][2]):
            best = lab
    return best, totals[best][0] / sum(t[0] for t in totals.values())


@settings(max_examples=200, deadline=None)
@given(
    data=st.lists(
        st.tuples(st.sampled_from(["a", "b", "c", None]), st.sampled_from([0.0, 0.1, 0.2, 0.3, 0.5, 0.9])),
        min_size=1,
        max_size=9,
    ),
    weighting=st.sampled_from(["uniform", "distance"]),
    threshold=st.sampled_from([None, 0.0, 0.25, 0.6]),
)
def test_vote_matches_a_plain_loop(data, weighting, threshold):
    data = sorted(data, key=lambda t: t[1])
    labels, dists = [t[0] for t in data], [t[1] for t in data]
    got = vote(labels, dists, weighting, threshold)
    want_label, want_conf = _vote_by_hand(labels, dists, weighting, threshold)
    assert got.label == want_label
    assert got.unknown == (want_label is None)
    assert got.confidence == pytest.approx(want_conf)


def test_vote_tie_rules():
    # 2-2 tie: smaller summed distance wins even though "a" is nearest
    assert vote(["a", "b", "b", "a"], [0.1, 0.2, 0.2, 0.5]).label == "b"
    # 2-2 tie with equal sums: the nearest neighbour's label
    assert vote(["b", "a", "a", "b"], [0.1, 0.2, 0.3, 0.4]).label == "b"
    # distance weighting: exact matches alone vote
    assert vote(["a", "b", "b"], [0.0, 0.01, 0.01], "distance").label == "a"
    # nothing within the threshold: unknown
    out = vote(["a", "b"], [0.7, 0.8], threshold=0.5)
    assert out.unknown and out.label is None and out.votes == {}
    # one neighbour within the threshold: every neighbour votes, as in the trainer's kNN
    out = vote(["a", "b", "b"], [0.4, 0.7, 0.8], threshold=0.5)
    assert out.label == "b" and not out.unknown and out.votes == {"a": 1.0, "b": 2.0}


# -- FAISS wrapper -------------------------------------------------------------------------------------
def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_flat_index_distances_match_numpy(distance):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 6)).astype(np.float32)
    if distance == "cosine":
        x = _unit(x).astype(np.float32)
    index = VectorIndex("m", 6, distance, IndexParams())
    keys = np.arange(100, 150)
    index.add(keys, x)
    dist, got = index.search(x[:5], 3)
    for q in range(5):
        brute = [pair_distance(distance, x[q], x[j]) for j in range(50)]
        order = np.argsort(brute)[:3]
        assert got[q].tolist() == (keys[order]).tolist()
        assert dist[q] == pytest.approx(np.asarray(brute)[order], abs=1e-5)
    assert got[0, 0] == 100 and dist[0, 0] == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_index_remove_subset_and_snapshot_roundtrip(kind, tmp_path):
    rng = np.random.default_rng(1)
    x = _unit(rng.standard_normal((400, 8))).astype(np.float32)
    params = IndexParams(kind=kind, ivf_nlist=4, ivf_nprobe=4)
    index = VectorIndex("m.v1", 8, "cosine", params)
    index.rebuild(np.arange(1, 401), x)
    assert index.kind == kind  # 400 >= 39 * 4: IVF trains
    index.remove([1, 2, 3])
    assert index.size == 397
    assert set(index.keys().tolist()) == set(range(4, 401))
    _, keys = index.search(x[:3], 1)
    assert not np.isin(keys, [1, 2, 3]).any()
    _, keys = index.search(x[10:11], 5, only=np.array([11, 12, 13]))
    assert set(keys[0][keys[0] >= 0].tolist()) <= {11, 12, 13} and keys[0][0] == 11

    blob, meta = index.serialize()
    write_snapshot(tmp_path, blob, meta)
    back = VectorIndex.load(tmp_path, "m.v1", 8, "cosine", params)
    assert back.kind == kind and back.size == 397
    assert set(back.keys().tolist()) == set(range(4, 401))
    with pytest.raises(ValueError, match="made for"):
        VectorIndex.load(tmp_path, "m.v1", 8, "euclidean", params)


def test_ivf_starts_flat_and_upgrades_when_trainable():
    rng = np.random.default_rng(2)
    x = _unit(rng.standard_normal((200, 8))).astype(np.float32)
    index = VectorIndex("m", 8, "cosine", IndexParams(kind="ivf", ivf_nlist=4))
    index.rebuild(np.arange(100), x[:100])
    assert index.kind == "flat" and not index.needs_rebuild()  # 100 < 39 x 4
    index.add(np.arange(100, 200), x[100:])
    assert index.needs_rebuild()
    index.rebuild(*index.contents())
    assert index.kind == "ivf" and index.size == 200


def _clustered(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    """Unit vectors around 40 centres: what a trained encoder's embeddings look like to an IVF index."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, dim))
    return _unit(centres[rng.integers(0, 40, n)] + 0.3 * rng.standard_normal((n, dim))).astype(np.float32)


def _exact_top(x: np.ndarray, keys: np.ndarray, q: np.ndarray, k: int) -> list[list[int]]:
    """The naive reference: every query against every vector, by cosine, in a plain loop."""
    out = []
    for row in q:
        scores = [float(np.dot(row, v)) for v in x]
        out.append([int(keys[j]) for j in np.argsort(scores)[::-1][:k]])
    return out


def test_auto_index_turns_ivf_past_its_threshold_with_tuned_recall():
    x = _clustered(3000)
    keys = np.arange(10, 3010)
    params = IndexParams(kind="auto", auto_threshold=2000, recall_target=0.95, recall_sample=50)
    index = VectorIndex("m", 16, "cosine", params)
    index.add(keys[:1500], x[:1500])
    assert index.kind == "flat" and not index.needs_rebuild()
    index.add(keys[1500:], x[1500:])
    assert index.needs_rebuild()
    index.rebuild(*index.contents())
    assert index.kind == "ivf" and index.size == 3000 and index.recall >= 0.95
    described = index.describe()
    assert described["nlist"] >= 64 and 1 <= described["nprobe"] <= described["nlist"]
    # the published recall is what the index really achieves against a plain loop
    q = x[:60]
    _, got = index.search(q, 10)
    found = sum(len(set(g.tolist()) & set(w)) for g, w in zip(got, _exact_top(x, keys, q, 10), strict=True))
    assert found / (60 * 10) >= 0.9
    for _ in range(50):  # the live sample gathers the same figure a few queries at a time
        index.sample_recall(2)
    assert index.recall is not None and index.recall >= 0.9


def test_a_filtered_search_on_ivf_is_exact_and_a_rebuild_keeps_writes_made_meanwhile():
    x = _clustered(3000, seed=1)
    keys = np.arange(3000)
    index = VectorIndex("m", 16, "cosine", IndexParams(kind="auto", auto_threshold=100))
    index.rebuild(keys, x)
    assert index.kind == "ivf"
    subset = keys[::7]  # a label held by every 7th item
    _, got = index.search(x[:5], 5, only=subset)
    assert got.tolist() == _exact_top(x[::7], subset, x[:5], 5)

    snapshot = index.contents()  # a rebuild: copy, journal the live changes, build, replay, swap
    index.begin_journal()
    index.add([5000, 5001], x[:2])
    index.remove([7, 8])
    built = index.build(*snapshot)
    index.install(built)
    live = set(index.keys().tolist())
    assert {5000, 5001} <= live and not {7, 8} & live and index.size == 3000


def test_hnsw_tombstones_are_compacted():
    rng = np.random.default_rng(3)
    x = _unit(rng.standard_normal((100, 8))).astype(np.float32)
    index = VectorIndex("m", 8, "cosine", IndexParams(kind="hnsw"))
    index.add(np.arange(100), x)
    index.remove(np.arange(20))
    assert index.tombstones and index.needs_rebuild()
    index.rebuild(*index.contents())
    assert not index.tombstones and index.size == 80 and faiss.downcast_index(index._index.index).ntotal == 80


def test_rwlock_readers_share_writers_exclude():
    lock = RWLock()
    active = {"readers": 0, "max_readers": 0, "writer_overlap": False}
    guard = threading.Lock()

    def reader():
        with lock.read():
            with guard:
                active["readers"] += 1
                active["max_readers"] = max(active["max_readers"], active["readers"])
            time.sleep(0.05)
            with guard:
                active["readers"] -= 1

    def writer():
        with lock.write():
            with guard:
                active["writer_overlap"] |= active["readers"] > 0
            time.sleep(0.01)

    threads = [threading.Thread(target=f) for f in [reader] * 4 + [writer] * 2 + [reader] * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert active["max_readers"] >= 2 and not active["writer_overlap"]


# -- schemas ---------------------------------------------------------------------------------------------
def test_item_shapes_and_vector_validation():
    body = EmbedRequest.model_validate(
        {"items": [[1, 2.5], {"vector": [3, 4]}, {"image": base64.b64encode(b"xx").decode()}]}
    )
    assert body.items[0].dtype == np.float32 and body.items[1].vector.tolist() == [3.0, 4.0]
    assert body.items[2].image == b"xx"
    for bad in (
        [float("nan")],
        [1e39],
        [],
        ["x"],
        [[1.0]],
        [None],
        [1, [2]],
        "abc",
        {"vector": [1], "x": 1},
        {"foo": 1},
    ):
        with pytest.raises(ValidationError):
            EmbedRequest.model_validate({"items": [bad]})
    with pytest.raises(ValidationError, match="exactly one"):
        CreateItemsRequest.model_validate({"items": [{"id": "a", "vector": [1], "image": "eHg="}]})
    with pytest.raises(ValidationError):
        CreateItemsRequest.model_validate({"items": [{"id": "a/b", "vector": [1]}]})
    assert SearchRequest.model_validate({"item": {"id": "x"}}).item.id == "x"


# -- encoder ---------------------------------------------------------------------------------------------
def test_encoder_refuses_a_modified_or_mismatched_model(tmp_path):
    import shutil

    src = model_dir()
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    (bad / "encoder.pt").write_bytes((bad / "encoder.pt").read_bytes() + b"x")
    with pytest.raises(CardError, match="does not match the card"):
        Encoder.load(bad)

    wrong_dim = tmp_path / "wrong"
    shutil.copytree(src, wrong_dim)
    card = (wrong_dim / CARD_FILE).read_text().replace('"embedding_dim": 8', '"embedding_dim": 5')
    (wrong_dim / CARD_FILE).write_text(card)
    with pytest.raises(CardError, match="embedding_dim=5"):
        Encoder.load(wrong_dim)

    future = tmp_path / "future"
    shutil.copytree(src, future)
    (future / CARD_FILE).write_text(
        (future / CARD_FILE).read_text().replace('"card_version": 1', '"card_version": 99')
    )
    with pytest.raises(CardError, match="newer"):
        Encoder.load(future)


def test_image_decoding_follows_the_card():
    enc = Encoder.load(model_dir("toy-img", dim=4, image=(1, 4, 4), max_value=16.0))
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    rgb = np.stack([gray] * 3, axis=-1)
    batch = enc.decode(
        [base64.b64decode(png_b64(gray)), base64.b64decode(png_b64(rgb)), np.full(16, 2, np.float32)]
    )
    assert batch.shape == (3, 1, 4, 4) and batch.dtype == np.float32
    assert batch.max() <= 16.0 and batch[0].max() > 8.0  # rescaled p / 255 * 16
    np.testing.assert_allclose(batch[0], batch[1], atol=0.1)  # RGB converted to L
    assert (batch[2] == 2).all()
    with pytest.raises(ServiceError, match="item 0: cannot decode"):
        enc.decode([b"not an image"])
    with pytest.raises(ServiceError, match="expects images"):
        enc.decode([np.zeros(5, np.float32)])
    rgb_model = Encoder.load(model_dir("toy-rgb", dim=4, image=(3, 4, 4)))
    out = rgb_model.decode([base64.b64decode(png_b64(rgb, "JPEG"))])
    assert out.shape == (1, 3, 4, 4)


# -- batcher ---------------------------------------------------------------------------------------------
class _CountingEncoder:
    """Stands in for Encoder inside the batcher unit test only (the API tests use real models)."""

    def __init__(self):
        self.calls: list[int] = []

    def embed(self, batch):
        self.calls.append(len(batch))
        time.sleep(0.01)
        return batch * 2


def test_batcher_coalesces_and_bounds_its_queue():
    async def main():
        enc = _CountingEncoder()
        seen = []
        batcher = MicroBatcher(
            max_batch_size=16, max_wait_ms=20, max_queue=40, observe=lambda n, w: seen.append(n)
        )
        await batcher.start()
        try:
            inputs = [np.full((2, 3), i, np.float32) for i in range(12)]
            outs = await asyncio.gather(*(batcher.embed(enc, x) for x in inputs))
            for x, out in zip(inputs, outs, strict=True):
                np.testing.assert_array_equal(out, x * 2)
            assert len(enc.calls) < 12 and max(enc.calls) <= 16 and sum(seen) == 24
            # overload: the queue holds 40 items; one request always fits an empty queue
            big = np.zeros((35, 3), np.float32)
            results = await asyncio.gather(
                *(batcher.embed(enc, big) for _ in range(3)), return_exceptions=True
            )
            rejected = [r for r in results if isinstance(r, ServiceError)]
            assert rejected and rejected[0].status_code == 429 and rejected[0].headers["Retry-After"]
            huge = await batcher.embed(enc, np.ones((50, 3), np.float32))  # > max_queue, alone: accepted
            assert huge.shape == (50, 3) and max(enc.calls) <= 16
        finally:
            await batcher.stop()

    asyncio.run(main())


# -- settings --------------------------------------------------------------------------------------------
def test_settings_from_flags_and_env(monkeypatch, tmp_path):
    monkeypatch.setenv("EMBED_MAX_ITEMS", "7")
    monkeypatch.setenv("EMBED_API_KEY", "secret")
    s = Settings(_cli_parse_args=["--data-dir", str(tmp_path), "--index-type", "hnsw", "--max-k", "9"])
    assert (s.data_dir, s.index_type, s.max_k, s.max_items) == (tmp_path, "hnsw", 9, 7)
    assert s.api_key is not None and s.api_key.get_secret_value() == "secret"
    assert s.db_url == f"sqlite:///{(tmp_path / 'service.db').resolve()}"
    with pytest.raises(ValidationError):
        make_settings(tmp_path, index_type="annoy")
    monkeypatch.setenv("EMBED_API_KEY", "")  # docker compose passes unset variables as empty strings
    monkeypatch.setenv("EMBED_MODEL", "")
    assert Settings().api_key is None and Settings().model is None
    names = {f.replace("_", "-") for f in Settings.model_fields}
    assert all(Settings.model_fields[f].description for f in Settings.model_fields), (
        "every flag is documented"
    )
    assert {"data-dir", "model", "api-key", "index-type", "max-wait-ms", "database-url"} <= names


def test_every_setting_is_documented_in_the_readme_section():
    doc = (REPO / "README.md").read_text()
    for name in Settings.model_fields:
        assert f"`--{name.replace('_', '-')}" in doc and f"`EMBED_{name.upper()}`" in doc, name


def test_row_cache_bounds_evicts_oldest_and_discards():
    cache = RowCache(capacity=3)
    cache.put_many([(1, ("a", "x")), (2, ("b", None)), (3, ("c", "y"))])
    found, missing = cache.get_many([1, 2, 9])
    assert found == {1: ("a", "x"), 2: ("b", None)} and missing == [9]
    cache.put_many([(4, ("d", "z")), (5, ("e", "z"))])  # two over capacity: keys 1 and 2 go
    assert len(cache) == 3 and cache.get_many([1, 2, 3, 4, 5]) == (
        {3: ("c", "y"), 4: ("d", "z"), 5: ("e", "z")},
        [1, 2],
    )
    cache.discard([4, 77])
    assert cache.get_many([4])[1] == [4] and len(cache) == 2
    off = RowCache(capacity=0)
    off.put_many([(1, ("a", "x"))])
    assert len(off) == 0 and off.get_many([1]) == ({}, [1])


def test_processes_starting_together_on_a_fresh_database_all_open_it(tmp_path, database_url):
    """docker-compose starts the api and the trainer at once on an empty volume (or an empty PostgreSQL
    database): all of them create tables."""
    for trial in range(10):
        url = database_url
        if url.startswith("sqlite"):
            url = f"sqlite:///{tmp_path / f'fresh-{trial}.db'}"  # a brand-new file every trial
        start, errors = threading.Barrier(6), []

        def open_it(url: str = url, start: threading.Barrier = start, errors: list = errors) -> None:
            start.wait()
            try:
                open_db(url)[0].dispose()
            except Exception as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)

        threads = [threading.Thread(target=open_it) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[0]
        engine, sessions = open_db(url)
        with sessions() as session:
            assert session.execute(text("select count(*) from items")).scalar() == 0
        Base.metadata.drop_all(engine)  # a fresh database again for the next trial
        engine.dispose()


def test_one_process_can_hold_a_connection_per_request_thread(database_url):
    """Starlette runs sync handlers on 40 threads, each may hold a session: the pool must not make the
    41st request wait (and fail after the pool timeout). PostgreSQL's default pool holds 15."""

    async def request_threads() -> int:
        return int(anyio.to_thread.current_default_thread_limiter().total_tokens)

    engine = make_engine(database_url)
    held = [engine.connect() for _ in range(anyio.run(request_threads))]
    try:
        assert len(held) == 40 and all(c.execute(text("select 1")).scalar() == 1 for c in held)
    finally:
        for c in held:
            c.close()
        engine.dispose()


def test_the_worker_takes_the_servers_settings_by_the_same_names():
    from service.config import StoreSettings, WorkerSettings

    assert set(StoreSettings.model_fields) < set(WorkerSettings.model_fields) < set(Settings.model_fields)
    doc = (REPO / "README.md").read_text()
    for name in WorkerSettings.model_fields:
        assert f"`--{name.replace('_', '-')}" in doc, name
    worker = WorkerSettings(_cli_parse_args=["--data-dir", "/tmp/x", "--job-max-attempts", "5"])
    assert worker.data_dir == Path("/tmp/x") and worker.job_max_attempts == 5
