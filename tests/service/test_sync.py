"""Following other replicas (``Catalogue.follow``) against writes made behind this replica's back, straight
in the shared tables (SQLite and PostgreSQL)."""

from __future__ import annotations

import shutil

import numpy as np
from fastapi.testclient import TestClient
from service_helpers import blobs, make_settings, model_dir, vector_items
from sqlalchemy import select, update

from service import items
from service.app import create_app
from service.catalogue import FollowResult
from service.items import NewRow
from service.tables import CollectionRow, ItemRow, RemovalRow


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def _write_elsewhere(state, rows: list[NewRow], embeddings: np.ndarray, remove_ids: list[str]) -> None:
    """What another replica's POST /items and DELETE /items/{id} leave in the shared tables."""
    with state.db.session() as session:
        items.claim_write(session, "default", "toy-vec")
        gone = items.ids_present(session, "default", remove_ids)
        items.remove_keys(session, "default", list(gone.values()))
        items.insert_rows(session, "default", "toy-vec", rows, embeddings)
        session.commit()


def test_follow_adds_and_removes_what_other_replicas_wrote(tmp_path, database_url):
    settings = make_settings(tmp_path, model=model_dir(), database_url=database_url)
    with TestClient(create_app(settings)) as c:
        state = c.app.state.service
        catalogue = state.collections.default
        x, y = blobs(3)
        c.post("/items", json={"items": vector_items(x, y)})
        assert catalogue.follow() == FollowResult(), "its own writes are already indexed"
        with state.db.session() as session:
            key_i0 = session.scalar(select(ItemRow.key).where(ItemRow.id == "i0"))
        assert key_i0 in catalogue.rows.get_many([key_i0])[0], "its id and label are cached"

        other = np.array([0, 0, 0, 0, 0, 0, 0, 5.0], np.float32)
        _write_elsewhere(state, [NewRow("elsewhere", "c9", None, other)], _unit(other)[None], ["i0"])
        assert catalogue.follow() == FollowResult(added=1, removed=1)
        assert catalogue.size == 9  # 9 - i0 + elsewhere
        assert catalogue.rows.get_many([key_i0])[1] == [key_i0], "a key gone elsewhere leaves the cache too"
        hit = c.post("/classify", json={"items": [other.tolist()], "k": 1}).json()["predictions"][0]
        assert hit["label"] == "c9" and hit["neighbors"][0]["id"] == "elsewhere"
        assert catalogue.follow() == FollowResult(), "a second pass finds nothing left to do"


def test_a_replica_behind_the_pruned_removals_log_compares_everything_once(tmp_path, database_url):
    settings = make_settings(tmp_path, model=model_dir(), database_url=database_url)
    with TestClient(create_app(settings)) as c:
        state = c.app.state.service
        catalogue = state.collections.default
        c.post("/items", json={"items": vector_items(*blobs(3))})
        _write_elsewhere(state, [], np.zeros((0, 8), np.float32), ["i1", "i2"])
        with state.db.session() as session:  # housekeeping pruned the log before this replica read it
            floor = session.scalar(select(RemovalRow.seq).order_by(RemovalRow.seq.desc()).limit(1))
            session.execute(RemovalRow.__table__.delete())
            session.execute(update(CollectionRow).values(removed_floor=floor))
            session.commit()
        assert catalogue.follow() == FollowResult(removed=2)
        assert catalogue.size == 7 and catalogue.follow() == FollowResult()


def test_follow_loads_a_model_another_replica_activated(tmp_path, database_url):
    settings = make_settings(tmp_path, model=model_dir(), database_url=database_url)
    shutil.copytree(model_dir("toy-b", scale=2.0), settings.paths.models / "toy-b")  # registered, not active
    with TestClient(create_app(settings)) as c:
        state = c.app.state.service
        catalogue = state.collections.default
        x, y = blobs(3)
        c.post("/items", json={"items": vector_items(x, y)})
        with state.db.session() as session:  # another replica re-embedded every row and moved the collection
            keys = items.all_keys(session, "default")
            vectors = items.load_embeddings(session, keys, "toy-vec", 8)[1]
            items.store_embeddings(session, "toy-b", np.asarray(keys), vectors)
            session.execute(update(CollectionRow).values(model_id="toy-b", previous_model_id="toy-vec"))
            session.commit()
        assert catalogue.follow() == FollowResult(followed="toy-b")
        assert catalogue.model_id == "toy-b" and catalogue.size == 9, "rebuilt from the table, nothing lost"
        hits = c.post("/search", json={"item": {"id": "i4"}, "k": 1}).json()
        assert hits["model"] == "toy-b" and hits["neighbors"][0]["id"] == "i4"


def test_a_removal_while_the_model_moved_elsewhere_is_a_409_that_changes_nothing(tmp_path, database_url):
    settings = make_settings(tmp_path, model=model_dir(), database_url=database_url, sync_interval=0)
    shutil.copytree(model_dir("toy-b", scale=2.0), settings.paths.models / "toy-b")
    with TestClient(create_app(settings)) as c:
        state = c.app.state.service
        x, y = blobs(3)
        c.post("/items", json={"items": vector_items(x, y)})
        with state.db.session() as session:  # another replica activated toy-b; this one has not followed yet
            keys = items.all_keys(session, "default")
            vectors = items.load_embeddings(session, keys, "toy-vec", 8)[1]
            items.store_embeddings(session, "toy-b", np.asarray(keys), vectors)
            session.execute(update(CollectionRow).values(model_id="toy-b", previous_model_id="toy-vec"))
            session.commit()
        for request in (lambda: c.delete("/items/i4"), lambda: c.delete("/items", params={"all": "true"})):
            answer = request()
            assert answer.status_code == 409, answer.text
            assert "changed model on another replica; retry" in answer.json()["detail"]
        assert c.get("/items").json()["total"] == 9
        state.collections.default.follow()
        assert c.delete("/items/i4").status_code == 204
        assert c.get("/items").json()["total"] == 8
