"""A database written by the previous version (one index, no collections) is upgraded in place at start."""

from __future__ import annotations

import json
import shutil
import sqlite3

import numpy as np
from fastapi.testclient import TestClient
from service_helpers import make_settings, model_dir

from service.app import create_app

# The tables exactly as version 1 of the service created them (SQLite), data and sequence included.
V1_SCHEMA = """
CREATE TABLE models (id VARCHAR(128) NOT NULL, path VARCHAR(4096) NOT NULL, card JSON NOT NULL,
  created_at DATETIME NOT NULL, active BOOLEAN NOT NULL, activated_at DATETIME, PRIMARY KEY (id));
CREATE INDEX ix_models_active ON models (active);
CREATE TABLE jobs (seq INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, id VARCHAR(64) NOT NULL,
  status VARCHAR(16) NOT NULL, config JSON NOT NULL, dataset_spec VARCHAR(4096) NOT NULL,
  model_id VARCHAR(128) NOT NULL, activate BOOLEAN NOT NULL, activation VARCHAR(1024), created_at DATETIME NOT NULL,
  started_at DATETIME, finished_at DATETIME, heartbeat_at DATETIME, worker_id VARCHAR(256),
  attempts INTEGER NOT NULL, cancel_requested BOOLEAN NOT NULL, progress JSON NOT NULL, metrics JSON NOT NULL,
  result JSON, log TEXT NOT NULL, error TEXT, UNIQUE (id));
CREATE INDEX ix_jobs_status ON jobs (status);
CREATE UNIQUE INDEX uq_jobs_pending_model ON jobs (model_id) WHERE status IN ('queued', 'running');
CREATE TABLE datasets (id VARCHAR(64) NOT NULL, filename VARCHAR(256) NOT NULL, original_name VARCHAR(256) NOT NULL,
  n INTEGER NOT NULL, classes JSON NOT NULL, shape JSON NOT NULL, size_bytes INTEGER NOT NULL,
  created_at DATETIME NOT NULL, PRIMARY KEY (id));
CREATE TABLE items ("key" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, id VARCHAR(256) NOT NULL,
  label VARCHAR(256), metadata JSON, input_kind VARCHAR(16) NOT NULL, input_dim INTEGER,
  input_data BLOB NOT NULL, embedding BLOB NOT NULL, model_id VARCHAR(128) NOT NULL, created_at DATETIME NOT NULL,
  UNIQUE (id), FOREIGN KEY(model_id) REFERENCES models (id));
CREATE INDEX ix_items_label ON items (label);
CREATE INDEX ix_items_model_id ON items (model_id);
"""


def test_a_version_1_database_keeps_every_item_and_key_in_the_default_collection(tmp_path):
    settings = make_settings(tmp_path)
    source = model_dir()
    shutil.copytree(source, settings.paths.model_dir("toy-vec"))
    card = json.loads((source / "model.json").read_text())
    con = sqlite3.connect(settings.paths.db_file)
    con.executescript(V1_SCHEMA)
    con.execute(
        "INSERT INTO models VALUES ('toy-vec', ?, ?, '2026-11-01 10:00:00', 1, '2026-11-01 10:00:00')",
        (str(settings.paths.model_dir("toy-vec")), json.dumps(card)),
    )
    rng = np.random.default_rng(0)
    stored = {}
    for key in (1, 2, 3, 5):  # key 4 and 6 were deleted: AUTOINCREMENT must never hand them out again
        x = rng.normal(size=8).astype(np.float32)
        stored[key] = (x / np.linalg.norm(x)).astype(np.float32)  # the toy model's own embedding
        con.execute(
            "INSERT INTO items VALUES (?, ?, ?, '{\"n\": 1}', 'vector', 8, ?, ?, 'toy-vec', '2026-11-02 10:00:00')",
            (key, f"i{key}", "a" if key % 2 else "b", x.tobytes(), stored[key].tobytes()),
        )
    con.execute("UPDATE sqlite_sequence SET seq = 6 WHERE name = 'items'")
    con.execute(
        "INSERT INTO jobs (id, status, config, dataset_spec, model_id, activate, created_at, attempts, "
        "cancel_requested, progress, metrics, log) VALUES ('job-old', 'succeeded', '{}', 'digits', 'toy-vec', 0, "
        "'2026-11-01 09:00:00', 1, 0, '{}', '[]', '')"
    )
    con.commit()
    con.close()

    with TestClient(create_app(settings)) as c:
        assert c.get("/ready").json() == {"status": "ready", "model": "toy-vec", "index_size": 4}
        listed = c.get("/items").json()
        assert [i["id"] for i in listed["items"]] == ["i1", "i2", "i3", "i5"] and listed["total"] == 4
        assert listed["items"][0]["metadata"] == {"n": 1}
        assert listed["items"][0]["created_at"] == "2026-11-02T10:00:00Z", "read back in UTC, with its zone"
        item = c.get("/items/i5", params={"include_embedding": True}).json()
        assert np.allclose(item["embedding"], stored[5]), "kept as stored, not re-embedded"
        assert c.get("/collections/default").json()["model"] == "toy-vec"
        assert c.get("/jobs/job-old").json()["collection"] == "default"
        c.post("/items", json={"items": [{"id": "new", "vector": [1.0] * 8}]})
    con = sqlite3.connect(settings.paths.db_file)
    assert con.execute("SELECT key FROM items WHERE id = 'new'").fetchone() == (7,), "no key is reused"
    assert con.execute("SELECT count(*) FROM embeddings").fetchone() == (5,)
    con.close()
    with TestClient(create_app(settings)) as c:  # a second start finds nothing to upgrade
        assert c.get("/ready").json()["index_size"] == 5
