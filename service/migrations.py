"""Upgrades a database written by an earlier version of the service, in place, at start-up.

Version 1 (one index per service) kept each item's embedding and model in the ``items`` row and marked
the active model on ``models``. Version 2 has collections: items belong to one, embeddings live in their
own table (one row per item and model), and the active model is the collection's. Upgrading puts every
item into the collection ``default``, served by the model that was active, with nothing re-embedded and
every key kept (keys are never reused, so snapshots stay valid).
"""

from __future__ import annotations

import logging

from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.exc import DBAPIError

from service.tables import ItemRow

logger = logging.getLogger(__name__)


def needs_upgrade(engine: Engine) -> bool:
    found = inspect(engine)
    return found.has_table("items") and "embedding" in {c["name"] for c in found.get_columns("items")}


def upgrade(engine: Engine) -> None:
    """Bring a version-1 database to version 2 (the new tables already exist: ``create_all`` made them).

    The server and a worker may start on the same old database at once: the loser's attempt fails on the
    already-changed tables, finds nothing left to upgrade, and goes on.
    """
    if not needs_upgrade(engine):
        return
    logger.warning("upgrading the database from version 1 (one index) to version 2 (collections)")
    try:
        _upgrade(engine)
    except DBAPIError:
        if needs_upgrade(engine):
            raise
        return  # another process upgraded it meanwhile
    logger.warning("database upgraded: every item is in the collection 'default'")


def _upgrade(engine: Engine) -> None:
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            # Rebuilding ``items`` drops the old table: without this, its foreign keys would cascade.
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            conn.exec_driver_sql("PRAGMA legacy_alter_table=ON")  # keep other tables' references as they are
            conn.commit()
            try:
                with conn.begin():
                    _move_models_and_embeddings(conn)
                    _rebuild_items_sqlite(conn)
                    _upgrade_models_and_jobs(conn)
            finally:
                conn.exec_driver_sql("PRAGMA legacy_alter_table=OFF")
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                conn.commit()
    else:
        with engine.begin() as conn:
            _move_models_and_embeddings(conn)
            conn.execute(
                text(
                    "ALTER TABLE items ADD COLUMN collection VARCHAR(64) NOT NULL DEFAULT 'default' "
                    "REFERENCES collections (name) ON DELETE CASCADE"
                )
            )
            conn.execute(text("ALTER TABLE items DROP COLUMN embedding, DROP COLUMN model_id"))
            conn.execute(text("ALTER TABLE items DROP CONSTRAINT IF EXISTS items_id_key"))
            conn.execute(text("DROP INDEX IF EXISTS ix_items_label"))
            for index in ItemRow.__table__.indexes:
                index.create(conn, checkfirst=True)
            conn.execute(
                text("ALTER TABLE items ADD CONSTRAINT uq_items_collection_id UNIQUE (collection, id)")
            )
            _upgrade_models_and_jobs(conn)


def _move_models_and_embeddings(conn: Connection) -> None:
    conn.execute(
        text(
            "INSERT INTO collections (name, model_id, activated_at, writes, removed_floor, created_at) "
            "SELECT 'default', (SELECT id FROM models WHERE active ORDER BY activated_at DESC LIMIT 1), "
            "(SELECT max(activated_at) FROM models WHERE active), 0, 0, CURRENT_TIMESTAMP "
            "WHERE NOT EXISTS (SELECT 1 FROM collections WHERE name = 'default')"
        )
    )
    conn.execute(
        text(
            "UPDATE collections SET model_id = (SELECT id FROM models WHERE active "
            "ORDER BY activated_at DESC LIMIT 1) WHERE name = 'default' AND model_id IS NULL"
        )
    )
    conn.execute(
        text('INSERT INTO embeddings ("key", model_id, vector) SELECT "key", model_id, embedding FROM items')
    )


def _rebuild_items_sqlite(conn: Connection) -> None:
    """SQLite cannot drop a UNIQUE column constraint: copy the rows into the new table and keep the keys."""
    conn.exec_driver_sql("ALTER TABLE items RENAME TO items_v1")
    for index in ("ix_items_label", "ix_items_model_id"):
        conn.exec_driver_sql(f"DROP INDEX IF EXISTS {index}")
    ItemRow.__table__.create(conn)
    columns = '"key", id, label, metadata, input_kind, input_dim, input_data, created_at'
    conn.exec_driver_sql(
        f"INSERT INTO items (collection, {columns}) SELECT 'default', {columns} FROM items_v1"
    )
    # AUTOINCREMENT's high-water mark survives, so a key deleted before the upgrade is never handed out again
    conn.exec_driver_sql(
        "INSERT INTO sqlite_sequence (name, seq) SELECT 'items', 0 "
        "WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'items')"
    )
    conn.exec_driver_sql(
        "UPDATE sqlite_sequence SET seq = "
        "max(seq, (SELECT seq FROM sqlite_sequence WHERE name = 'items_v1')) WHERE name = 'items'"
    )
    conn.exec_driver_sql("DROP TABLE items_v1")
    conn.exec_driver_sql("DELETE FROM sqlite_sequence WHERE name = 'items_v1'")


def _upgrade_models_and_jobs(conn: Connection) -> None:
    conn.execute(text("DROP INDEX IF EXISTS ix_models_active"))
    conn.execute(text("ALTER TABLE models DROP COLUMN active"))
    conn.execute(text("ALTER TABLE models DROP COLUMN activated_at"))
    conn.execute(text("ALTER TABLE jobs ADD COLUMN collection VARCHAR(64) NOT NULL DEFAULT 'default'"))
    conn.execute(text("ALTER TABLE jobs ADD COLUMN test_dataset_spec VARCHAR(4096)"))
    conn.execute(text("ALTER TABLE jobs ADD COLUMN force BOOLEAN NOT NULL DEFAULT FALSE"))
