"""``service.sync`` against writes made behind this replica's back, straight in the shared table
(SQLite and PostgreSQL)."""

from __future__ import annotations

import shutil

import numpy as np
from fastapi.testclient import TestClient
from service_helpers import blobs, make_settings, model_dir, vector_items
from sqlalchemy import delete, select, update

from service.app import create_app
from service.store import ItemRow
from service.sync import SyncResult, sync_with_database


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def test_catch_up_adds_removes_and_never_drops_a_row_of_another_model(tmp_path, database_url):
    settings = make_settings(tmp_path, model=model_dir(), database_url=database_url)
    shutil.copytree(model_dir("toy-b", scale=2.0), settings.paths.models / "toy-b")  # registered, not active
    with TestClient(create_app(settings)) as c:
        state = c.app.state.service
        x, y = blobs(3)
        c.post("/items", json={"items": vector_items(x, y)})
        assert sync_with_database(state) == SyncResult(), "nothing to do when the index matches"
        with state.session() as session:
            key_i0 = session.scalar(select(ItemRow.key).where(ItemRow.id == "i0"))
        assert key_i0 in state.rows.get_many([key_i0])[0], "its id and label are cached"

        other = np.array([0, 0, 0, 0, 0, 0, 0, 5.0], np.float32)  # as another replica would store it
        with state.session() as session:
            session.add(
                ItemRow(
                    id="elsewhere",
                    label="c9",
                    input_kind="vector",
                    input_dim=8,
                    input_data=other.tobytes(),
                    embedding=_unit(other).tobytes(),
                    model_id="toy-vec",
                )
            )
            session.execute(delete(ItemRow).where(ItemRow.id == "i0"))
            # a row re-embedded for another model (an activation elsewhere) is not a deletion
            session.execute(update(ItemRow).where(ItemRow.id == "i1").values(model_id="toy-b"))
            session.commit()
        assert sync_with_database(state) == SyncResult(added=1, removed=1)
        assert state.runtime.index.size == 9  # 9 - i0 + elsewhere; i1 stays until the activation is followed
        assert state.rows.get_many([key_i0])[1] == [key_i0], "a key gone elsewhere leaves the cache too"

        hit = c.post("/classify", json={"items": [other.tolist()], "k": 1}).json()["predictions"][0]
        assert hit["label"] == "c9" and hit["neighbors"][0]["id"] == "elsewhere"
        assert sync_with_database(state) == SyncResult(), "a second pass finds nothing left to do"
