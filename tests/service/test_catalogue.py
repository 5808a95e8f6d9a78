"""A catalogue's index maintenance against real writes: rebuilt in the background, nothing lost meanwhile."""

from __future__ import annotations

import threading

import numpy as np
from fastapi.testclient import TestClient
from service_helpers import make_settings, model_dir, vector_items
from sqlalchemy import select

from service.app import create_app
from service.tables import ItemRow


def test_the_auto_index_turns_ivf_in_the_background_and_keeps_writes_made_meanwhile(tmp_path):
    settings = make_settings(tmp_path, model=model_dir(), auto_index_threshold=600)
    x = np.random.default_rng(0).standard_normal((1400, 8)).astype(np.float32)
    with TestClient(create_app(settings)) as c:
        catalogue = c.app.state.service.collections.default
        assert c.post("/items", json={"items": vector_items(x[:700], prefix="a")}).status_code == 201
        assert catalogue.runtime.index.kind == "flat" and catalogue.runtime.index.needs_rebuild()

        rebuilt: list[bool] = []
        builder = threading.Thread(target=lambda: rebuilt.append(catalogue.maintain()))
        builder.start()
        for start in range(700, 1400, 100):  # written while the replacement trains
            chunk = vector_items(x[start : start + 100], prefix=f"b{start}-")
            assert c.post("/items", json={"items": chunk}).status_code == 201
        for i in range(0, 50):
            assert c.delete(f"/items/a{i}").status_code == 204
        builder.join(60)
        assert rebuilt == [True]

        index = catalogue.runtime.index
        with c.app.state.service.db.session() as session:
            stored = set(session.scalars(select(ItemRow.key)))
        assert index.kind == "ivf" and set(index.keys().tolist()) == stored and index.size == 1350
        info = c.get("/info").json()
        assert info["index"]["type"] == "ivf" and info["index"]["size"] == 1350
        assert info["index"]["recall_at_10"] >= 0.9 and info["collections"]["default"]["index_type"] == "ivf"
        assert 'embed_index_recall{collection="default"}' in c.get("/metrics").text
        for i in (60, 699):  # every stored vector is its own nearest neighbour
            hit = c.post("/search", json={"item": {"id": f"a{i}"}, "k": 1}).json()["neighbors"][0]
            assert hit["id"] == f"a{i}"
        assert not index.needs_rebuild()
