"""The client stands alone: it imports and works where only httpx, pydantic and numpy are installed, and
its own copies of the response models match the server's field for field.

The environment is a fresh venv (``venv.EnvBuilder``, no pip, no system site-packages) into which the
distributions httpx, pydantic and numpy and everything they require are linked from this interpreter's
site-packages, file tree by file tree as pip had installed them: offline and in about a second. The child
runs with ``-I`` (no PYTHONPATH, no user site) and puts the repository on ``sys.path`` itself, so the whole
of ``service`` and ``trainer`` can be found but torch, FAISS, FastAPI, SQLAlchemy or orjson cannot; a
meta-path hook also records any attempt to import them. The child then drives ``Client``,
``AsyncClient`` and a collection against an ``httpx.MockTransport`` that answers as the server does.
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import re
import subprocess
import time
import types
import venv
from pathlib import Path
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel
from service_helpers import REPO

from service import client_models, schemas

ALLOWED = ("httpx", "pydantic", "numpy")
BLOCKED = ("torch", "faiss", "fastapi", "starlette", "sqlalchemy", "uvicorn", "orjson", "PIL", "sklearn")

CHILD = r"""
import asyncio, importlib.abc, json, os, sys, sysconfig

repo, site, blocked = sys.argv[1], sys.argv[2], set(sys.argv[3].split(","))
attempts = []


class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            attempts.append(name)
            raise ImportError(f"{name} may not be imported by the client")
        return None


sys.meta_path.insert(0, Block())
sys.path.insert(0, repo)

import httpx
import numpy as np

from service.client import AsyncClient, Client, ConflictError, TrainConfig

NOW = "2025-01-01T00:00:00Z"
seen = []
polls = {"n": 0}


def entry(model, status):
    return {"seq": 2, "collection": "faces", "model": model, "previous_model": "m1", "kind": "activation",
            "requested_by": "request", "status": status, "gate": {"checked": True, "passed": True},
            "error": None, "done": 0, "total": 3, "started_at": NOW, "finished_at": None}


def handler(request):
    path, body = request.url.path, json.loads(request.content or b"null")
    seen.append(f"{request.method} {path}")
    if path == "/embed":
        rows = [[1.0, 0.0]] * len(body["items"])
        return httpx.Response(200, json={"model": "m1", "dim": 2, "embeddings": rows})
    if path == "/collections/faces/search":
        assert body == {"item": {"vector": [1.0, 2.0]}, "k": 1}, body
        hit = {"id": "a", "label": "x", "distance": 0.0, "similarity": 1.0}
        return httpx.Response(200, json={"model": "m2", "neighbors": [hit]})
    if path == "/collections/faces/activate":
        if body["model"] == "worse":
            detail = "model worse was not activated: knn_accuracy 0.5 vs 0.9"
            return httpx.Response(409, json={"detail": detail})
        return httpx.Response(202, json={"status": "activating", "model": body["model"], "activation": 2})
    if path == "/collections/faces":
        polls["n"] += 1
        model, status = [("m1", "activating"), ("m2", "activating"), ("m2", "active")][min(polls["n"], 3) - 1]
        latest = entry("m2", status)
        return httpx.Response(200, json={"name": "faces", "model": model, "previous_model": "m1", "size": 3,
                                         "index": {"type": "flat"}, "activation": latest,
                                         "created_at": NOW, "activated_at": NOW})
    if path == "/collections/faces/items":
        offset, limit = int(request.url.params["offset"]), int(request.url.params["limit"])
        rows = [{"id": f"i{n}", "label": None, "metadata": None, "model": "m2", "created_at": NOW}
                for n in range(offset, min(offset + limit, 3))]
        return httpx.Response(200, json={"items": rows, "total": 3, "limit": limit, "offset": offset})
    if path == "/train":
        assert body == {"epochs": 1, "activate": True, "collection": "faces"}, body
        return httpx.Response(202, json={"id": "job-1", "status": "queued", "model_id": "m3"})
    return httpx.Response(404, json={"detail": f"no route {path}"})


def sync():
    with Client("http://test", transport=httpx.MockTransport(handler)) as c:
        assert c.embed(np.eye(2, dtype=np.float32)).embeddings.dtype == np.float32
        faces = c.collection("faces")
        assert faces.search(np.array([1.0, 2.0]), k=1).neighbors[0].id == "a"
        assert faces.activate("m2").status == "activating"
        polls["n"] = 0
        assert faces.wait_active("m2", interval=0.001).activation.status == "active"
        assert [i.id for i in faces.iter_items(page_size=2)] == ["i0", "i1", "i2"]
        assert c.train(TrainConfig(epochs=1), activate=True, collection="faces").model_id == "m3"
        try:
            faces.activate("worse")
            raise AssertionError("no ConflictError")
        except ConflictError as refused:
            assert "0.5 vs 0.9" in refused.detail


async def asynchronous():
    async with AsyncClient("http://test", transport=httpx.MockTransport(handler)) as c:
        faces = c.collection("faces")
        assert (await faces.search([1.0, 2.0], k=1)).neighbors[0].id == "a"
        polls["n"] = 0
        assert (await faces.wait_active("m2", interval=0.001)).model == "m2"
        assert [i.id async for i in faces.iter_items(page_size=2)] == ["i0", "i1", "i2"]
        assert (await c.embed([[1.0, 0.0]])).dim == 2


sync()
asyncio.run(asynchronous())
paths = sysconfig.get_paths()
allowed = tuple(os.path.abspath(p) + os.sep for p in (paths["stdlib"], paths["platstdlib"], site, repo))
outside = sorted(
    name for name, module in list(sys.modules.items())
    if getattr(module, "__file__", None) and not os.path.abspath(module.__file__).startswith(allowed)
)
loaded = sorted({name.partition(".")[0] for name in sys.modules} & blocked)
print(json.dumps({"attempts": attempts, "outside": outside, "loaded": loaded, "seen": seen}))
"""


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(names: tuple[str, ...]) -> list[metadata.Distribution]:
    """The installed distributions ``names`` need (their requirements without extras, recursively)."""
    found: dict[str, metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        if _key(name) in found:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:  # required only on other Pythons (exceptiongroup < 3.11)
            continue
        found[_key(name)] = dist
        needs = [r for r in dist.requires or [] if "extra ==" not in r]
        todo += [m.group() for r in needs if (m := re.match(r"[\w.-]+", r))]
    return list(found.values())


def _venv_with(tmp: Path, names: tuple[str, ...]) -> tuple[Path, Path, set[str]]:
    """A fresh venv holding only ``names`` and their requirements: its python, site-packages, the
    distributions linked into it."""
    venv.EnvBuilder(with_pip=False, symlinks=True, system_site_packages=False).create(tmp)
    (site,) = tmp.glob("lib/python*/site-packages")
    linked = set()
    for dist in _closure(names):
        assert dist.files, f"{dist.metadata['Name']} lists no files (installed without pip's RECORD?)"
        tops = {f.parts[0] for f in dist.files or [] if not f.parts[0].startswith("..")}  # not bin/
        for top in tops - {"__pycache__"}:
            (site / top).symlink_to(Path(str(dist.locate_file(top))))
        linked.add(_key(dist.metadata["Name"]))
    return tmp / "bin" / "python", site, linked


def test_the_client_imports_and_works_with_only_httpx_pydantic_and_numpy(tmp_path: Path):
    started = time.monotonic()
    python, site, linked = _venv_with(tmp_path / "venv", ALLOWED)
    assert {"httpx", "pydantic", "numpy", "pydantic-core", "httpcore"} <= linked
    assert not linked & {"torch", "faiss-cpu", "fastapi", "sqlalchemy", "orjson"}

    # the venv really lacks them: a plain import fails there
    probe = subprocess.run([python, "-I", "-c", "import orjson"], capture_output=True, text=True)
    assert probe.returncode == 1 and "No module named 'orjson'" in probe.stderr

    out = subprocess.run(
        [python, "-I", "-c", CHILD, str(REPO), str(site), ",".join(BLOCKED)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["attempts"] == [] and result["loaded"] == []
    assert result["outside"] == []  # every module came from the stdlib, the venv or the repository
    # the scoped object's calls went to /collections/faces/...; the client's own to the flat routes
    assert result["seen"][:4] == [
        "POST /embed",
        "POST /collections/faces/search",
        "POST /collections/faces/activate",
        "GET /collections/faces",
    ]
    assert result["seen"].count("GET /collections/faces/items") == 4  # two pages, sync and async
    assert time.monotonic() - started < 10


def _shape(annotation: Any) -> Any:
    """A comparable form of a field's type: nested models by name, generics by origin and arguments."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation.__name__
    origin = get_origin(annotation)
    if origin is None:
        return repr(annotation)
    if origin is types.UnionType:
        origin = Union
    return (repr(origin), tuple(_shape(arg) for arg in get_args(annotation)))


def _fields(model: type[BaseModel]) -> dict[str, Any]:
    return {
        name: (_shape(field.annotation), field.is_required(), None if field.is_required() else field.default)
        for name, field in model.model_fields.items()
    }


def test_the_clients_response_models_mirror_the_servers():
    mirrored = [
        value
        for value in vars(client_models).values()
        if isinstance(value, type)
        and issubclass(value, BaseModel)
        and value.__module__ == client_models.__name__
    ]
    pairs = [(m, getattr(schemas, m.__name__)) for m in mirrored if hasattr(schemas, m.__name__)]
    names = {m.__name__ for m, _ in pairs}
    assert {
        "CollectionOut",
        "HistoryEntry",
        "ActivationAccepted",
        "JobOut",
        "ModelOut",
        "SearchResponse",
    } <= names
    assert {m.__name__ for m in mirrored} - names == {"Ready", "Info"}  # the server answers these as dicts
    for mine, theirs in pairs:
        assert _fields(mine) == _fields(theirs), mine.__name__
