"""The collections of a service: one ``Catalogue`` each, created, found, listed and deleted here.

A collection name matches ``^[a-z0-9][a-z0-9_-]{0,63}$``; it is checked before it names anything, so it
is safe in a snapshot path. The collection ``default`` always exists: the flat routes (``/items``,
``/search``...) mean it, and it can be emptied but not deleted.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from service import items
from service.catalogue import DEFAULT, Catalogue, FollowResult
from service.db import Database
from service.encoder import Encoder
from service.errors import ErrorCode, ServiceError, activating
from service.index import IndexParams
from service.paths import DataDir
from service.tables import ActivationRow, CollectionRow
from trainer.card import CardError

logger = logging.getLogger(__name__)
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
_NAME = re.compile(NAME_PATTERN)


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        shown = name if len(name) <= 80 else name[:80] + "..."
        raise ServiceError(
            ErrorCode.INVALID_REQUEST,
            f"collection name {shown!r} is not valid: lower-case letters, digits, '-' and '_', "
            "starting with a letter or digit, at most 64 characters",
        )
    return name


class Collections:
    """Every collection's catalogue, kept in step with the ``collections`` table."""

    def __init__(
        self,
        db: Database,
        paths: DataDir,
        params: IndexParams,
        row_cache_items: int,
        load_encoder: Callable[[str], Encoder],
    ) -> None:
        self.db = db
        self.paths = paths
        self.params = params
        self.row_cache_items = row_cache_items
        self.load_encoder = load_encoder
        self._catalogues: dict[str, Catalogue] = {}
        self._lock = threading.Lock()  # guards the dict; each catalogue guards itself

    def _new(self, name: str) -> Catalogue:
        return Catalogue(
            name, self.db, self.paths.index / name, self.params, self.row_cache_items, self.load_encoder
        )

    # -- start-up ------------------------------------------------------------------------------------
    def open_all(self) -> None:
        """Load every collection; one that cannot load its model starts without it, the others serve."""
        with self.db.session() as session:
            if session.get(CollectionRow, DEFAULT) is None:
                session.add(CollectionRow(name=DEFAULT))
                try:
                    session.commit()
                except IntegrityError:  # another process made it first
                    session.rollback()
            names = list(session.scalars(select(CollectionRow.name).order_by(CollectionRow.name)))
        for name in names:
            self._open(name)

    def _open(self, name: str) -> Catalogue:
        catalogue = self._new(name)
        try:
            catalogue.open()
        except (ServiceError, CardError, OSError) as exc:
            logger.error(
                "collection %s: cannot load its model (%s); it serves nothing until another is activated",
                name,
                getattr(exc, "detail", exc),
            )
        with self._lock:
            return self._catalogues.setdefault(name, catalogue)

    # -- lookup --------------------------------------------------------------------------------------
    def get(self, name: str) -> Catalogue:
        """The named collection's catalogue: 422 for a malformed name, 404 for an unknown one."""
        check_name(name)
        with self._lock:
            catalogue = self._catalogues.get(name)
        if catalogue is None:
            raise ServiceError(ErrorCode.NOT_FOUND, f"no collection named {name!r} (GET /collections)")
        return catalogue

    @property
    def default(self) -> Catalogue:
        return self.get(DEFAULT)

    def all(self) -> list[Catalogue]:
        with self._lock:
            return [self._catalogues[name] for name in sorted(self._catalogues)]

    # -- create and delete ---------------------------------------------------------------------------
    def create(self, name: str) -> Catalogue:
        """A new, empty collection without a model (409 if the name is taken)."""
        check_name(name)
        with self.db.session() as session:
            session.add(CollectionRow(name=name))
            try:
                session.commit()
            except IntegrityError:
                raise ServiceError(ErrorCode.CONFLICT, f"collection {name!r} already exists") from None
        logger.info("created collection %s", name)
        catalogue = self._new(name)
        with self._lock:
            return self._catalogues.setdefault(name, catalogue)

    def delete(self, name: str) -> None:
        """Remove the collection with its items, embeddings, history and snapshots, and nothing else."""
        catalogue = self.get(name)
        if name == DEFAULT:
            raise ServiceError(
                ErrorCode.CONFLICT,
                "the default collection cannot be deleted; empty it with DELETE /collections/default/items",
            )
        if not catalogue.activation_mutex.acquire(blocking=False):
            raise activating(name)
        try:
            with self.db.session() as session:
                items.delete_collection_rows(session, name)
                session.execute(delete(ActivationRow).where(ActivationRow.collection == name))
                session.execute(delete(CollectionRow).where(CollectionRow.name == name))
                session.commit()
            with self._lock:
                self._catalogues.pop(name, None)
            catalogue.runtime = None
            catalogue.remove_files()
        finally:
            catalogue.activation_mutex.release()
        logger.info("deleted collection %s", name)

    # -- periodic work -------------------------------------------------------------------------------
    def snapshot_all(self) -> None:
        for catalogue in self.all():
            try:
                catalogue.snapshot()
            except Exception:  # noqa: BLE001 - keep snapshotting the others; the database stays the truth
                logger.exception("collection %s: index snapshot failed", catalogue.name)

    def follow(self) -> dict[str, FollowResult]:
        """Catch up with other replicas: collections created or deleted there, then each one's changes."""
        with self.db.session() as session:
            names = set(session.scalars(select(CollectionRow.name)))
        with self._lock:
            local = set(self._catalogues)
            gone = [self._catalogues.pop(name) for name in local - names]
        for catalogue in gone:
            catalogue.runtime = None
            catalogue.remove_files()
            logger.info("collection %s was deleted by another replica", catalogue.name)
        for name in sorted(names - local):
            self._open(name)
            logger.info("collection %s was created by another replica", name)
        return {catalogue.name: catalogue.follow() for catalogue in self.all()}
