"""Hostile input (issue #12): every bad request gets one clear 4xx, changes nothing and leaks nothing.

Each test runs a real app on tmp_path (``TestClient``, raise_server_exceptions off, so a bug shows as a
500 instead of a traceback). The ``hostile`` fixture records every answer; at teardown it checks that
none carries a server path (the data dir, the test's tmp dir, the models' build dir, the source tree,
the venv) and that the app counted no unhandled exception. ``refused`` checks one request: its status,
words of its detail, a bounded answer, and the store unchanged (items with their metadata, the index,
jobs, data sets, models, the files under datasets/).
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
import sys
import time
import tracemalloc
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from service_helpers import (
    _MODEL_ROOT,
    GOOD,
    LIMITS,
    REPO,
    blobs,
    make_settings,
    model_dir,
    unhandled_exceptions,
    vector_items,
)

from service import jobs, schemas
from service.app import create_app
from service.errors import INTERNAL_ERROR
from service.schemas import INPUT_LIMITS, METADATA_MAX_BYTES, METADATA_MAX_DEPTH, METADATA_MAX_KEYS

pytestmark = pytest.mark.timeout(240)

JSON_ROUTES = {
    "/embed",
    "/items",
    "/search",
    "/similarity",
    "/verify",
    "/classify",
    "/train",
    "/collections",
    "/collections/{name}/activate",
}  # the item routes under /collections/{name}/ are the same routes, mounted twice
CONCRETE = {"/collections/{name}/activate": "/collections/default/activate"}
VALID_BODIES: dict[str, dict[str, Any]] = {  # accepted as they are, under LIMITS and the toy model
    "/embed": {"items": [GOOD]},
    "/items": {"items": [{"id": "fresh", "vector": GOOD}]},
    "/search": {"item": GOOD, "k": 2},
    "/similarity": {"a": GOOD, "b": {"id": "i0"}},
    "/verify": {"a": GOOD, "b": GOOD},
    "/classify": {"items": [GOOD], "k": 2},
    "/train": {"dataset": "digits", "epochs": 1},
    "/collections": {"name": "fresh"},
    "/collections/{name}/activate": {"model": "toy-vec"},
}
UPLOAD_LIMIT = 64 * 1024
MAX_ANSWER = 16 * 1024  # no refusal needs more; an echo of the input never grows with it
TABLES = ("items", "models", "jobs", "datasets")


class Hostile:
    """A client that records every answer, and knows how to look at the store."""

    def __init__(self, client: TestClient, data_dir: Path) -> None:
        self.c = client
        self.data_dir = data_dir
        self.answers: list[tuple[str, str, int, str]] = []
        client.event_hooks = {"response": [self._record]}

    def _record(self, response: Any) -> None:
        response.read()
        request = response.request
        self.answers.append((request.method, str(request.url), response.status_code, response.text))

    def store(self) -> tuple[Any, ...]:
        """Everything a request could change: every row of every table, the index, the data set files."""
        state = self.c.app.state.service
        with state.db.engine.connect() as conn:
            tables = [conn.exec_driver_sql(f"SELECT * FROM {t} ORDER BY 1").all() for t in TABLES]
        files = sorted(p.name for p in (self.data_dir / "datasets").glob("*"))
        return tables, state.collections.default.runtime.index.size, files

    def refused(self, method: str, path: str, status: int, words: str = "", **kwargs: Any) -> Any:
        before = self.store()
        r = self.c.request(method, path, **kwargs)
        assert r.status_code == status, (method, path, r.status_code, r.text[:500])
        assert words in json.dumps(r.json()["detail"]), (path, words, r.text[:500])
        assert len(r.content) < MAX_ANSWER, (path, len(r.content))
        assert self.store() == before, f"{method} {path} changed the store"
        return r

    def check_nothing_leaked(self, secrets: list[str]) -> None:
        assert self.answers, "no answer was recorded"
        for method, url, status, body in self.answers:
            assert status < 500, (method, url, status, body[:300])
            for secret in secrets:
                assert secret not in body, f"{method} {url} ({status}) shows a server path: {body[:300]}"


def server_paths(tmp_path: Path) -> list[str]:
    return sorted({str(tmp_path), str(tmp_path.resolve()), str(_MODEL_ROOT), str(REPO), sys.prefix}, key=len)


@pytest.fixture
def hostile(tmp_path) -> Iterator[Hostile]:
    config = make_settings(
        tmp_path, model=model_dir(), max_upload_bytes=UPLOAD_LIMIT, max_body_bytes=1 << 20, **LIMITS
    )
    app = create_app(config)
    with TestClient(app, raise_server_exceptions=False) as c:
        h = Hostile(c, config.data_dir)
        x, y = blobs(2)
        items = vector_items(x, y)
        items[0]["metadata"] = {"note": "seeded", "tags": ["a", "b"], "n": 1}
        assert c.post("/items", json={"items": items}).status_code == 201
        yield h
        assert unhandled_exceptions(c.get("/metrics").text) == 0
    h.check_nothing_leaked(server_paths(tmp_path))


def nested(depth: int, leaf: Any = 1) -> dict[str, Any]:
    """An object ``depth`` levels deep (itself included): {"a": {"a": ... leaf}}."""
    value: Any = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


def raw(h: Hostile, path: str, body: bytes, content_type: str | None = "application/json") -> Any:
    headers = {"content-type": content_type} if content_type is not None else {}
    return h.c.post(path, content=body, headers=headers)


# -- 1. content types and encodings --------------------------------------------------------------------
def test_every_json_route_is_the_list_we_check(hostile):
    """Routes that take a JSON body, read from the app: a new one joins every check below."""
    found = {
        context.original_route.path
        for context in iter_route_contexts(hostile.c.app.routes)
        if type(getattr(getattr(context.original_route, "body_field", None), "field_info", None)).__name__
        == "Body"
    }
    assert found == JSON_ROUTES


NOT_JSON = [
    ("application/octet-stream", b"\xff\xfe\x00\x80"),
    ("text/plain", None),  # None: the route's valid body, as JSON text
    ("application/x-www-form-urlencoded", None),  # what `curl -d` sends
    ("image/png", b"\x89PNG\r\n\x1a\n\xff\x00"),
    ("application/jsonx", None),
    ("json", None),
    ("", None),
    (None, None),  # no Content-Type at all
    ("application/json; charset=utf-16", None),
    ("application/json; charset=latin-1", None),
]


def test_a_body_that_is_not_declared_json_is_a_415(hostile):
    png = ("x.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "image/png")  # curl -F file=@x.png
    for path in sorted(JSON_ROUTES):
        for content_type, body in NOT_JSON:
            content = body if body is not None else json.dumps(VALID_BODIES[path]).encode()
            headers = {} if content_type is None else {"content-type": content_type}
            words = "UTF-8" if content_type and "charset" in content_type else "application/json"
            hostile.refused("POST", CONCRETE.get(path, path), 415, words, content=content, headers=headers)
        hostile.refused("POST", CONCRETE.get(path, path), 415, "multipart/form-data", files={"file": png})


def test_json_declared_any_standard_way_is_read(hostile):
    for path in sorted(JSON_ROUTES):
        for n, content_type in enumerate(
            ("application/json", "application/json; charset=UTF-8", "application/vnd.x+json")
        ):
            body = {"/items": _item(f"ct-{n}"), "/collections": {"name": f"ct-{n}"}}.get(
                path, VALID_BODIES[path]
            )
            r = raw(hostile, CONCRETE.get(path, path), json.dumps(body).encode(), content_type)
            assert r.status_code in (200, 201, 202), (path, content_type, r.text)


NOT_UTF8_JSON = [
    (b"\xff\xfe\x00\x80", "UTF-8"),
    (json.dumps({"items": [GOOD]}).encode("utf-16"), "UTF-8"),  # with its BOM
    (json.dumps({"items": [GOOD]}).encode("utf-16-le"), "UTF-8"),
    (json.dumps({"items": [GOOD]}).encode("utf-32"), "UTF-8"),
    ('{"items": [{"vector": [1,1,1,1,1,1,1,1], "label": "café"}]}'.encode("latin-1"), "UTF-8"),
    (b"\xef\xbb\xbf" + json.dumps({"items": [GOOD]}).encode(), "BOM"),
    (b'{"items": [[1,1,1,1,1,1,1,1]], "x": "\\ud800"}', "surrogate"),
    (b"", "Field required"),
    (b"\x00" * 64, "UTF-8"),
]


def test_bytes_that_are_not_utf8_json_are_a_422_saying_so(hostile):
    for body, words in NOT_UTF8_JSON:
        for path in ("/embed", "/items", "/train"):
            headers = {"content-type": "application/json"}
            r = hostile.refused("POST", path, 422, "", content=body, headers=headers)
            assert words.lower() in r.text.lower(), (body[:20], r.text)


def test_a_lying_content_length_still_gets_a_4xx(hostile):
    """Content-Length 0 skips the media-type check (no body declared); FastAPI then sees raw text."""
    body = json.dumps({"items": [GOOD]}).encode()
    headers = {"content-type": "text/plain", "content-length": "0"}
    hostile.refused("POST", "/items", 422, "valid dictionary", content=body, headers=headers)
    headers = {"content-type": "application/octet-stream", "content-length": "0"}
    undecodable = b"\xff\xfe\x00\x80" * 100  # the bytes that made the old 422 handler crash
    r = hostile.refused("POST", "/embed", 422, "valid dictionary", content=undecodable, headers=headers)
    assert r.json()["detail"][0]["input"].startswith("\ufffd\ufffd\x00\ufffd")  # raw bytes, echoed safely
    assert r.json()["detail"][0]["input"].endswith("... (400 bytes)")


# -- 2. bounded echoes -----------------------------------------------------------------------------------
def test_a_422_never_echoes_megabytes(hostile):
    huge = "x" * 900_000
    for path, body in [
        ("/embed", {"items": [huge]}),
        ("/embed", {"items": [[huge[:100_000]] * 8]}),
        ("/embed", {"items": [list(range(100_000))]}),
        ("/classify", {"items": [GOOD], "weighting": huge}),
        ("/items", {"items": [{"vector": GOOD, huge[:300_000]: 1}]}),  # a key: in the error's loc
        ("/items", {"items": [{"vector": GOOD, "metadata": {"k": huge}}]}),
        ("/search", {"item": {"id": huge[:300_000]}}),
        ("/train", {"dataset": "digits", "name": huge}),
    ]:
        hostile.refused("POST", path, 422, "", json=body)
    r = hostile.refused("POST", "/classify", 422, "uniform", json={"items": [GOOD], "weighting": huge})
    echoed = r.json()["detail"][0]["input"]
    assert echoed.startswith("x" * 200 + "...") and echoed.endswith(f"({len(huge) - 200} more characters)")
    too_many = {"items": [{"vector": [True] * 8}] * 40}  # 40 errors, each with its input
    r = hostile.refused("POST", "/embed", 422, "true", json=too_many)
    assert len(r.json()["detail"]) == 21 and r.json()["detail"][-1]["msg"] == "20 more errors"


def test_deep_json_anywhere_is_a_4xx(hostile):
    for depth in (300, 1000, 5000):  # 5000 passes orjson's own depth limit: invalid JSON
        deep = nested(depth)
        bodies = [
            ("/embed", {"items": [deep]}),
            ("/embed", {"items": deep}),
            ("/items", {"items": [{"vector": GOOD, "metadata": deep}]}),
            ("/search", {"item": deep}),
            ("/search", {"item": GOOD, "k": deep}),
            ("/verify", {"a": GOOD, "b": GOOD, "threshold": deep}),
            ("/classify", {"items": [GOOD], "weighting": deep}),
            ("/train", {"dataset": deep}),
        ]
        for path, body in bodies:
            text = json.dumps(body) if depth < 900 else _dumps_deep(body)
            hostile.refused("POST", path, 422, "", content=text, headers={"content-type": "application/json"})


def _dumps_deep(value: Any) -> str:
    """json.dumps recurses: write nested one-key objects iteratively."""
    if isinstance(value, dict) and len(value) == 1 and isinstance(next(iter(value.values())), dict):
        key, inner = next(iter(value.items()))
        return "{" + json.dumps(key) + ":" + _dumps_deep(inner) + "}"
    if isinstance(value, dict):
        return "{" + ",".join(json.dumps(k) + ":" + _dumps_deep(v) for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_dumps_deep(v) for v in value) + "]"
    return json.dumps(value)


sys.setrecursionlimit(max(sys.getrecursionlimit(), 12_000))  # _dumps_deep on 5,000 levels


# -- 3. metadata, ids and labels bounded at the door ----------------------------------------------------
def test_the_limits_are_listed_in_info(hostile):
    limits = hostile.c.get("/info").json()["limits"]
    assert INPUT_LIMITS.items() <= limits.items()
    assert limits["metadata_max_depth"] == METADATA_MAX_DEPTH and limits["max_upload_bytes"] == UPLOAD_LIMIT
    assert limits["max_npz_unpacked_bytes"] == 4 * UPLOAD_LIMIT


def _item(item_id: str, metadata: Any = None, label: str | None = None, vector: list[float] = GOOD) -> Any:
    item: dict[str, Any] = {"id": item_id, "vector": vector}
    if metadata is not None:
        item["metadata"] = metadata
    if label is not None:
        item["label"] = label
    return {"items": [item]}


def test_metadata_beyond_a_limit_is_a_422_naming_it(hostile):
    wide = {f"k{i}": {"v": i} for i in range(METADATA_MAX_KEYS // 2 + 1)}  # keys at two levels count
    for metadata, words in [
        (nested(METADATA_MAX_DEPTH + 1), "metadata_max_depth"),
        ({"a": json.loads("[" * METADATA_MAX_DEPTH + "]" * METADATA_MAX_DEPTH)}, "metadata_max_depth"),
        (wide, "metadata_max_keys"),
        ({"blob": ["y" * 8000] * 9}, "metadata_max_bytes"),
        ({"s": "y" * (INPUT_LIMITS["metadata_max_string_chars"] + 1)}, "metadata_max_string_chars"),
        ({"y" * (INPUT_LIMITS["metadata_max_string_chars"] + 1): 1}, "metadata_max_string_chars"),
        ({"s": "a\x00b"}, "NUL"),
        ({"a\x00": 1}, "NUL"),
        ([1, 2], "dictionary"),
        ("text", "dictionary"),
    ]:
        hostile.refused("POST", "/items", 422, words, json=_item("m", metadata))
    big_int = b'{"items": [{"id": "m", "vector": [1,1,1,1,1,1,1,1], "metadata": {"n": 1e400}}]}'
    hostile.refused(
        "POST", "/items", 422, "json_invalid", content=big_int, headers={"content-type": "application/json"}
    )


def test_everything_that_can_be_stored_can_be_read_back(hostile):
    c = hostile.c
    just_deep = nested(METADATA_MAX_DEPTH)
    keys = {f"k{i}": i for i in range(METADATA_MAX_KEYS)}
    big = {"blob": ["z" * INPUT_LIMITS["metadata_max_string_chars"]] * 7, "more": "z" * 8000}
    odd = {
        "emoji": "🙂",
        "rtl": "שלום",
        "ctl": "tab\there\nnewline",
        "u64": 2**64 - 1,
        "i64": -(2**63),
        "float": 1.7976931348623157e308,
        "tiny": 5e-324,
        "none": None,
        "bools": [True, False],
        "": "",
    }
    ids = ["x" * INPUT_LIMITS["id_max_chars"], "ü-日本-🙂", "a?b#c%d&e=f", "a.b", "...", "-", "~a", "+"]
    stored = [
        {"id": ids[0], "vector": GOOD, "metadata": just_deep, "label": "l" * INPUT_LIMITS["label_max_chars"]},
        {"id": ids[1], "vector": GOOD, "metadata": keys, "label": "a label with spaces"},
        {"id": ids[2], "vector": GOOD, "metadata": big, "label": "ünïcödé 🙂"},
        {"id": ids[3], "vector": GOOD, "metadata": odd},
        *({"id": i, "vector": GOOD} for i in ids[4:]),
    ]
    assert METADATA_MAX_BYTES - 1000 < len(json.dumps(big, separators=(",", ":"))) <= METADATA_MAX_BYTES
    r = c.post("/items", json={"items": stored})
    assert r.status_code == 201, r.text[:500]
    for item in stored:
        got = c.get("/items/" + quote(item["id"], safe=""))
        assert got.status_code == 200, (item["id"], got.text[:300])
        assert got.json()["metadata"] == item.get("metadata") and got.json()["label"] == item.get("label")
    listed = c.get("/items", params={"limit": 1000})
    assert listed.status_code == 200 and listed.json()["total"] == 6 + len(stored)
    for label in ("l" * 256, "ünïcödé 🙂"):
        assert c.get("/items", params={"label": label}).json()["total"] == 1
    found = c.post("/search", json={"item": GOOD, "k": 50})
    assert found.status_code == 200 and len(found.json()["neighbors"]) == 6 + len(stored)
    assert {n["id"] for n in found.json()["neighbors"]} >= set(ids)
    assert c.post("/classify", json={"items": [GOOD], "k": 50}).status_code == 200
    assert c.post("/similarity", json={"a": {"id": ids[2]}, "b": {"id": ids[1]}}).status_code == 200
    for item_id in ids:
        assert c.delete("/items/" + quote(item_id, safe="")).status_code == 204


def test_ids_and_labels_that_break_things_are_a_422(hostile):
    for item_id in [
        "",
        "x" * 257,
        "a\x00b",
        "a b",
        "a/b",
        ".",
        "..",
        "\t",
        "a\nb",
        "\x7f",
        "a\x85b",
        "a\u2028b",
    ]:
        hostile.refused("POST", "/items", 422, "id", json=_item(item_id))
        hostile.refused("POST", "/search", 422, "id", json={"item": {"id": item_id}})
    for label in ["", "l" * 257, "a\x00b", "a\nb", "\x1f", "\x9f"]:
        hostile.refused("POST", "/items", 422, "label", json=_item("ok-id", label=label))
        hostile.refused("POST", "/search", 422, "label", json={"item": GOOD, "label": label})


def test_duplicate_json_keys_the_last_one_wins(hostile):
    """Documented behaviour (README, Errors): as orjson, Python's json and browsers read them."""
    c = hostile.c
    body = (
        b'{"items": [{"id": "first", "id": "dup", "vector": [9,9,9,9,9,9,9,9], "vector": [0,0,1,0,0,0,0,0]}]}'
    )
    assert raw(hostile, "/items", body).json() == {"ids": ["dup"]}
    assert c.get("/items/first").status_code == 404
    stored = c.get("/items/dup", params={"include_input": True}).json()
    assert stored["input"]["vector"] == [0, 0, 1, 0, 0, 0, 0, 0]
    k = raw(hostile, "/search", b'{"item": [1,1,1,1,1,1,1,1], "k": 1000, "k": 1}')
    assert k.status_code == 200 and len(k.json()["neighbors"]) == 1


# -- 4. values that are not what they say ----------------------------------------------------------------
B = [True, False, True, True, False, True, True, True]
NOT_NUMBERS = [
    ("/embed", {"items": [B]}, "true or false"),
    ("/embed", {"items": [GOOD[:7] + [True]]}, "true or false"),
    ("/embed", {"items": [{"vector": B}]}, "true or false"),
    ("/embed", {"items": [GOOD[:7] + ["0.5"]]}, "no strings"),
    ("/embed", {"items": [["NaN"] * 8]}, "no strings"),
    ("/embed", {"items": [GOOD[:7] + [None]]}, "null"),
    ("/embed", {"items": [[1e39] * 8]}, "float32 range"),
    ("/embed", {"items": [[-(2**63)] * 7 + [10**300]]}, "float32 range"),
    ("/items", {"items": [{"id": "b", "vector": B, "label": "x"}]}, "true or false"),
    ("/search", {"item": B}, "true or false"),
    ("/search", {"item": {"vector": B}}, "true or false"),
    ("/similarity", {"a": GOOD, "b": B}, "true or false"),
    ("/verify", {"a": B, "b": GOOD, "threshold": 0.5}, "true or false"),
    ("/classify", {"items": [GOOD, B]}, "true or false"),
    ("/verify", {"a": GOOD, "b": GOOD, "threshold": "NaN"}, "valid number"),
    ("/verify", {"a": GOOD, "b": GOOD, "threshold": "Infinity"}, "valid number"),
    ("/verify", {"a": GOOD, "b": GOOD, "threshold": "-Infinity"}, "valid number"),
    ("/verify", {"a": GOOD, "b": GOOD, "threshold": "0.5"}, "valid number"),
    ("/verify", {"a": GOOD, "b": GOOD, "threshold": True}, "valid number"),
    ("/verify", {"a": GOOD, "b": GOOD, "threshold": 1e308 * 10}, ""),  # json.dumps writes Infinity
    ("/classify", {"items": [GOOD], "threshold": "NaN"}, "valid number"),
    ("/classify", {"items": [GOOD], "threshold": "Infinity"}, "valid number"),
    ("/classify", {"items": [GOOD], "threshold": "-Infinity"}, "valid number"),
    ("/classify", {"items": [GOOD], "threshold": [0.5]}, "valid number"),
]
for route, k in [("/search", "k"), ("/classify", "k")]:
    base = {"item": GOOD} if route == "/search" else {"items": [GOOD]}
    NOT_NUMBERS += [
        (route, base | {k: value}, words)
        for value, words in [
            (True, "valid integer"),
            (2.0, "valid integer"),
            (2.5, "valid integer"),
            ("3", "valid integer"),
            (None, "valid integer"),
            (0, "greater than or equal to 1"),
            (-5, "greater than or equal to 1"),
            (51, "between 1 and 50"),
            (2**63, "between 1 and 50"),
            (-(2**63), "greater than or equal to 1"),
            (10**30, "valid integer"),  # beyond 64 bits the parser reads a float
        ]
    ]


def test_numbers_are_strict(hostile):
    for path, body, words in NOT_NUMBERS:
        content = json.dumps(body)  # json.dumps writes Infinity, which JSON (and the service) refuses
        hostile.refused(
            "POST", path, 422, words, content=content, headers={"content-type": "application/json"}
        )


def test_the_boolean_check_runs_only_where_a_boolean_can_be(hostile, monkeypatch):
    """Checking each number's type costs ~30 ns a number, so it runs only when the body holds a "u" or an
    "l" (a true or a false may be in it): a true in the metadata spoils no vector, and bodies of bare
    numbers skip the check. ``set`` is what the check calls, so counting its calls shows when it ran."""
    calls = []

    def counting_set(*args: Any) -> set[Any]:
        calls.append(1)
        return set(*args)

    monkeypatch.setattr(schemas, "set", counting_set, raising=False)
    body = {"items": [{"id": "flags", "vector": GOOD, "metadata": {"ok": True, "bad": False}}]}
    assert hostile.c.post("/items", json=body).status_code == 201 and len(calls) == 1
    calls.clear()
    numbers = [0.0, 1.0, 1, 0, 2.5, -1, 1e-30, 3]  # 1 and 0 too: the same floats as true and false
    assert hostile.c.post("/embed", json={"items": [numbers] * 5}).status_code == 200
    assert calls == []


QUERY_INTS = [
    ("/items", {"limit": "2.0"}),
    ("/items", {"limit": "true"}),
    ("/items", {"limit": "-1"}),
    ("/items", {"limit": "0"}),
    ("/items", {"limit": "1e3"}),
    ("/items", {"limit": " 5"}),
    ("/items", {"limit": "+5"}),
    ("/items", {"limit": "1_000"}),
    ("/items", {"limit": "٣"}),  # an Arabic-Indic 3: int() takes it, HTTP clients do not mean it
    ("/items", {"limit": "1001"}),
    ("/items", {"offset": "99999999999999999999999"}),
    ("/items", {"offset": "-1"}),
    ("/items", {"limit": ""}),
    ("/jobs", {"limit": "2.0"}),
    ("/jobs", {"offset": "-1"}),
    ("/jobs", {"status": "cancel" * 2000}),
]


def test_query_integers_are_plain_decimal(hostile):
    for path, params in QUERY_INTS:
        hostile.refused("GET", path, 422, "", params=params)


def test_train_numbers_are_strict_and_nothing_is_queued(hostile):
    for field, value in [
        ("epochs", True),
        ("epochs", 2.0),
        ("epochs", "2"),
        ("epochs", -1),
        ("epochs", 10**30),
        ("batch_size", 1.5),
        ("seed", 2**64),
        ("hidden", [True]),
        ("hidden", [64.0]),
        ("lr", "0.1"),
        ("lr", True),
        ("augment", 1),
        ("activate", "yes"),
    ]:
        hostile.refused("POST", "/train", 422, field, json={"dataset": "digits", field: value})


# -- long strings in every string field -----------------------------------------------------------------
LONG = "q" * 10_000


def test_very_long_strings_in_every_string_field(hostile):
    for path, body, status in [
        ("/items", _item(LONG), 422),
        ("/items", _item("ok", label=LONG), 422),
        ("/items", _item("ok", metadata={LONG: 1}), 422),
        ("/items", _item("ok", metadata={"k": LONG}), 422),
        ("/items", {"items": [{"id": "ok", "image": "A" * 400_000}]}, 422),  # base64 of no image
        ("/embed", {"items": [{"image": "data:" + LONG}]}, 422),
        ("/search", {"item": {"id": LONG}}, 422),
        ("/search", {"item": GOOD, "label": LONG}, 422),
        ("/classify", {"items": [GOOD], "weighting": LONG}, 422),
        ("/train", {"dataset": LONG}, 400),
        ("/train", {"dataset": "digits", "name": LONG}, 422),
        ("/train", {"dataset": "digits", "loss": LONG}, 422),
        ("/train", {"dataset": "missing.csv", "label_column": LONG}, 422),
        ("/train", {"dataset": "digits", "test_dataset": LONG}, 400),
        ("/train", {"dataset": "digits", "test_dataset": "/etc/passwd"}, 400),  # escapes datasets/
        ("/train", {"dataset": "idx:" + LONG}, 400),
    ]:
        r = hostile.refused("POST", path, status, "", json=body)
        assert len(r.text) < 4000, (path, len(r.text))
    for path in ("/items/", "/models/", "/jobs/", "/datasets/", "/models/toy-vec/files/", "/models/"):
        r = hostile.refused("GET", path + LONG, 404, "")
        assert len(r.text) < 2500
    hostile.refused("DELETE", "/items/" + LONG, 404, "")
    hostile.refused("POST", "/jobs/" + LONG + "/cancel", 404, "")
    hostile.refused("POST", f"/models/{LONG}/activate", 404, "")
    assert hostile.c.get("/items", params={"label": LONG}).json()["total"] == 0


# -- 5. no server paths --------------------------------------------------------------------------------
def test_no_answer_shows_a_server_path(hostile, tmp_path):
    """Symlink loops, names too long for the file system, model paths: the answers name none of them
    (the fixture scans every answer of every test here for the data dir, tmp, source and venv paths)."""
    datasets = hostile.data_dir / "datasets"
    datasets.mkdir(exist_ok=True)
    (datasets / "loop").symlink_to(datasets / "loop")
    (datasets / "out").symlink_to(tmp_path)
    for name in (
        "loop",
        "loop/x.npz",
        "x" * 300,
        "a/" * 3000,
        "out/x.npz",
        "/etc/passwd",
        "../x",
        "idx:loop",
    ):
        hostile.refused("POST", "/train", 400, "dataset", json={"dataset": name})
    models = hostile.c.get("/models").json()
    assert [m["path"] for m in models] == ["models/toy-vec"]
    assert hostile.c.get("/models/toy-vec").json()["path"] == "models/toy-vec"
    report = hostile.c.get("/models/toy-vec/report")
    assert report.status_code == 404


def test_job_errors_and_logs_hide_the_data_dir(hostile):
    """A worker's error and log name files by their full path; the API shows them under <data-dir>."""
    c = hostile.c
    job_id = c.post("/train", json={"dataset": "digits", "epochs": 1}).json()["id"]
    state = c.app.state.service
    claimed = jobs.claim_next(state.db.sessions, "w-test")
    assert claimed is not None and claimed.id == job_id
    where = state.settings.data_dir.resolve() / "datasets" / "gone.npz"
    error, log = f"cannot read {where}", f"opening {where}\n"
    jobs.finish(state.db.sessions, job_id, "w-test", jobs.FAILED, error=error, log=log)
    job = c.get(f"/jobs/{job_id}").json()
    assert job["error"] == "cannot read <data-dir>/datasets/gone.npz"
    assert job["log"] == "opening <data-dir>/datasets/gone.npz\n"


# -- 6. uploads: decompression bombs --------------------------------------------------------------------
def _gzip_zeros(size: int) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as gz:
        chunk = b"0" * (1 << 20)
        for _ in range(size // len(chunk)):
            gz.write(chunk)
    return out.getvalue()


def test_a_gzip_bomb_csv_is_a_413_before_it_inflates(hostile):
    bomb = _gzip_zeros(32 << 20)  # 32 MiB of "0" in ~32 KB: 500 times the inflated limit
    assert len(bomb) < UPLOAD_LIMIT
    tracemalloc.start()
    try:
        r = hostile.refused(
            "POST", "/datasets", 413, "unpacks to more than", files={"file": ("bomb.csv", bomb)}
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "--max-upload-bytes" in r.json()["detail"]
    assert peak < 8 << 20, f"held {peak} bytes at once for a 32 MiB bomb"


def _npz(**arrays: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.savez_compressed(out, **arrays)
    return out.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def _npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": descr, "fortran_order": False, "shape": shape})
    return out.getvalue()


def _shrink_declared_size(archive: bytes, name: bytes, size: int) -> bytes:
    """Rewrite a member's uncompressed size in its local and central headers (a lying archive)."""
    data = bytearray(archive)
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.find(signature)
        while at >= 0:
            name_at = at + (30 if signature == b"PK\x03\x04" else 46)
            if data[name_at : name_at + len(name)] == name:
                data[at + offset : at + offset + 4] = size.to_bytes(4, "little")
            at = data.find(signature, at + 4)
    return bytes(data)


def _set_flag(archive: bytes, bit: int) -> bytes:
    """Set a general-purpose flag bit of the first member (bit 0: "encrypted") in both its headers."""
    data = bytearray(archive)
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        data[data.find(signature) + offset] |= 1 << bit
    return bytes(data)


def test_upload_bombs_and_broken_archives_are_refused(hostile):
    x, y = np.zeros((64, 8), np.float32), np.arange(64) % 2
    ok = _npz(x=x, y=y)
    zeros = _npz(x=np.zeros((200_000, 8), np.float32), y=np.zeros(200_000, np.int64))  # 8 MB in ~20 KB
    lying_header = _zip(
        {"x.npy": _npy_header((10**12,)) + b"\0" * 64, "y.npy": _npy_header((2,), "<i8") + b"\0" * 16}
    )
    many = _zip({f"a{i}.npy": ok[:10] for i in range(17)})
    members = {"x.npy": _npy_header((64, 8)) + x.tobytes(), "y.npy": _npy_header((64,), "<i8") + y.tobytes()}
    shrunk = _shrink_declared_size(_zip(members | {"notes.txt": b"n" * 5000}), b"notes.txt", 100)
    csv_gz = gzip.compress(b"a,b,label\n1,2,x\n3,4,y\n1,2,x\n3,4,y\n")
    cases = [
        (("zeros.npz", zeros), 413, "unpacks to more than"),
        (("lying.npz", lying_header), 422, "promises"),
        (("many.npz", many), 422, "17 arrays"),
        (("shrunk.npz", shrunk), 422, "corrupt"),
        (("locked.npz", _set_flag(ok, 0)), 422, "encrypted"),
        (("x.npz", b"PK\x05\x06" + b"\0" * 18), 422, ""),
        (("x.npz", b"not a zip at all"), 422, ""),
        (("trunc.csv", csv_gz[: len(csv_gz) // 2]), 422, "corrupt"),
        (("junk.csv", b"\x1f\x8b" + b"\xff" * 100), 422, "corrupt"),
        (("x.exe", ok), 422, ".npz or .csv"),
        (("q" * 300 + ".csv", b"a,label\n1,x\n"), 422, "255"),
    ]
    for file, status, words in cases:
        hostile.refused("POST", "/datasets", status, words, files={"file": file})
    hostile.refused("POST", "/datasets", 422, "file", json={"file": "x"})
    part = b'Content-Disposition: form-data; name="file"; filename="a\tb.csv"\r\n\r\na,label\n1,x\n'
    tab = b"--B\r\n" + part + b"\r\n--B--\r\n"
    headers = {"content-type": "multipart/form-data; boundary=B"}  # httpx would escape the tab
    hostile.refused("POST", "/datasets", 422, "printable", content=tab, headers=headers)
    headers = {"content-type": "multipart/form-data"}  # no boundary
    hostile.refused("POST", "/datasets", 400, "", content=b"--x\r\n", headers=headers)
    assert hostile.c.post("/datasets", files={"file": ("ok.npz", ok)}).status_code == 201
    good_gz = hostile.c.post("/datasets", files={"file": ("ok.csv", csv_gz)})
    assert good_gz.status_code == 201 and good_gz.json()["n"] == 4


VALID_UPLOADS = {
    "ok.npz": _npz(x=np.eye(8, dtype=np.float32)[np.arange(16) % 8], y=np.arange(16) % 2),
    "ok.csv": gzip.compress(b"a,b,label\n1,2,x\n3,4,y\n1,2,x\n3,4,y\n"),
}
# Byte positions near either end (negative: from the end), where headers, the central directory and the
# gzip trailer live; and anywhere.
POSITIONS = st.integers(-160, 80) | st.integers(0, 10_000)
MUTATIONS = st.lists(st.tuples(POSITIONS, st.integers(0, 255)), min_size=1, max_size=4)


def test_mutated_uploads_never_get_a_500(hostile):
    """Valid archives with a few bytes changed (sizes, flags, CRCs, headers): a 4xx that keeps nothing,
    or a 201, never a 500."""

    @settings(
        max_examples=150,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(name=st.sampled_from(sorted(VALID_UPLOADS)), mutations=MUTATIONS)
    def check(name: str, mutations: list[tuple[int, int]]) -> None:
        data = bytearray(VALID_UPLOADS[name])
        for at, value in mutations:
            data[at % len(data)] = value  # a negative position counts from the end
        before = hostile.store()
        r = hostile.c.post("/datasets", files={"file": (name, bytes(data))})
        assert r.status_code < 500, (name, mutations, r.text)
        if r.status_code >= 400:
            assert hostile.store() == before

    check()


# -- 7. statuses that say what happened -----------------------------------------------------------------
def test_cancel_answers_what_happened(hostile):
    c = hostile.c
    state = c.app.state.service
    queued = c.post("/train", json={"dataset": "digits", "epochs": 1}).json()["id"]
    r = c.post(f"/jobs/{queued}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"

    running = c.post("/train", json={"dataset": "digits", "epochs": 1, "name": "run-me"}).json()["id"]
    assert jobs.claim_next(state.db.sessions, "w-test").id == running
    assert c.get(f"/jobs/{running}").json()["status"] == "running"
    r = c.post(f"/jobs/{running}/cancel")
    assert r.status_code == 202 and r.headers["location"] == f"/jobs/{running}"
    assert r.json()["status"] == "cancelling" and r.json()["cancel_requested"] is True
    assert c.get(f"/jobs/{running}").json()["status"] == "cancelling"
    assert [j["id"] for j in c.get("/jobs", params={"status": "cancelling"}).json()["jobs"]] == [running]
    assert c.get("/jobs", params={"status": "running"}).json()["total"] == 0
    assert jobs.finish(state.db.sessions, running, "w-test", jobs.CANCELLED, error="cancelled")
    assert c.get(f"/jobs/{running}").json()["status"] == "cancelled"
    hostile.refused("POST", f"/jobs/{running}/cancel", 409, "already cancelled")


def test_a_job_whose_activation_failed_says_so(hostile, tmp_path):
    """The test plays the worker: it trains nothing, but leaves an image model where the job's model
    goes; the service's housekeeping then fails to activate it over the stored vectors."""
    c = hostile.c
    state = c.app.state.service
    job = c.post("/train", json={"dataset": "digits", "epochs": 1, "name": "img-x", "activate": True}).json()
    assert jobs.claim_next(state.db.sessions, "w-test").id == job["id"]
    source = model_dir("img-x", image=(1, 4, 4))
    target = state.settings.paths.models / "img-x"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, target)
    assert jobs.finish(state.db.sessions, job["id"], "w-test", jobs.SUCCEEDED, result={})
    seen = _poll(
        lambda: c.get(f"/jobs/{job['id']}").json(), lambda j: (j["activation"] or "").startswith("failed")
    )
    assert seen["status"] == "succeeded" and "takes images" in seen["activation"]
    assert seen["error"].startswith("the model img-x was trained and registered, but activating it failed: ")
    assert (
        "takes images" in seen["error"]
        and 'POST /collections/default/activate {"model": "img-x"}' in seen["error"]
    )
    model = c.get("/models/img-x").json()
    assert model["activation"]["status"] == "failed" and not model["active"]


def _poll(fetch: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not done(value := fetch()):
        assert time.monotonic() < deadline, value
        time.sleep(0.05)
    return value


# -- 8. unhandled exceptions: a bare 500, counted --------------------------------------------------------
def test_an_unhandled_exception_is_a_bare_500_and_counted(tmp_path):
    app = create_app(make_settings(tmp_path, model=model_dir()))
    with TestClient(app, raise_server_exceptions=False) as c:
        assert unhandled_exceptions(c.get("/metrics").text) == 0
        state = app.state.service

        def broken_add(keys: Any, vectors: Any) -> None:
            raise RuntimeError(f"faiss exploded in {tmp_path}")

        state.collections.default.runtime.index.add = broken_add
        r = c.post("/items", json={"items": [{"id": "x", "vector": GOOD}]})
        assert r.status_code == 500 and r.json() == {"detail": INTERNAL_ERROR}
        assert "faiss" not in r.text and str(tmp_path) not in r.text
        assert unhandled_exceptions(c.get("/metrics").text) == 1
        del state.collections.default.runtime.index.add
        assert c.get("/items").json()["total"] == 0


# -- the fuzzer: every route, arbitrary bodies, content types and headers ---------------------------------
settings_for_fuzzing = settings(
    max_examples=1000,
    deadline=None,
    derandomize=True,  # the same examples every run: the suite never flakes on a new one
    database=None,
    suppress_health_check=list(HealthCheck),
)


def _route_paths(app: Any) -> list[tuple[str, str]]:
    out = []
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        out += [(m, route.path) for m in sorted(getattr(route, "methods", None) or []) if m != "HEAD"]
    return out


FIELD_NAMES = (
    "items", "item", "k", "a", "b", "threshold", "weighting", "label", "id", "vector", "image", "metadata",
    "dataset", "epochs", "name", "activate", "loss", "hidden", "source", "test_dataset",
)  # fmt: skip
FIELDS = st.sampled_from(FIELD_NAMES)
VECTORS = st.lists(st.floats(width=32) | st.integers(-5, 5) | st.booleans(), min_size=7, max_size=9)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12) | VECTORS,
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(FIELDS | st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=20,
)
PATH_PARAMS = st.sampled_from(
    ["i0", "toy-vec", "nope", "%00", "..", "%2F", "a" * 300, "ü", "report.md"]
) | st.text(alphabet=st.characters(codec="utf-8", exclude_characters="/?#"), min_size=1, max_size=20)
CONTENT_TYPES = st.sampled_from(  # JSON most of the time, so that bodies reach validation
    ["application/json"] * 8
    + [
        None,
        "application/json; charset=utf-16",
        'application/json; charset="utf-8"',
        "application/vnd.api+json",
    ]
    + ["text/plain", "application/octet-stream", "multipart/form-data", "multipart/form-data; boundary=xyz"]
    + ["application/x-www-form-urlencoded", "image/png", ";;;"]
)
HEADER_NAMES = (
    "content-length", "content-encoding", "transfer-encoding", "accept", "authorization", "range", "expect",
    "cookie", "x-junk",
)  # fmt: skip
HEADERS = st.dictionaries(
    st.sampled_from(HEADER_NAMES),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30)
    | st.sampled_from(["0", "-1", "99999999999999999999", "gzip", "chunked", "abc"]),
    max_size=3,
)


def _encode(value: Any) -> bytes:
    try:
        return json.dumps(value, allow_nan=True).encode()
    except (ValueError, OverflowError):
        return b"{}"


BODIES = st.one_of(
    st.binary(max_size=64),
    JSON_VALUES.map(_encode),
    st.dictionaries(FIELDS, JSON_VALUES, max_size=5).map(_encode),
    st.dictionaries(FIELDS, JSON_VALUES, max_size=5).map(lambda d: _encode(d).decode().encode("utf-16")),
)
QUERIES = st.dictionaries(
    st.sampled_from(
        ["limit", "offset", "label", "status", "upsert", "include_input", "include_embedding", "x"]
    ),
    st.text(max_size=10) | st.sampled_from(["1", "-1", "2.0", "true", "1e9", "٣"]),
    max_size=3,
)


def test_fuzzed_requests_to_every_route_never_get_a_500(tmp_path):
    """Every route the app serves (read from app.routes), with arbitrary bodies, content types, headers,
    path and query parameters: never a 500, and a refused request changes nothing in the database."""
    config = make_settings(tmp_path, model=model_dir(), max_upload_bytes=UPLOAD_LIMIT, **LIMITS)
    app = create_app(config)
    with TestClient(app, raise_server_exceptions=False) as c:
        h = Hostile(c, config.data_dir)
        x, y = blobs(2)
        assert c.post("/items", json={"items": vector_items(x, y)}).status_code == 201
        routes = _route_paths(app)
        assert len(routes) >= 28 and ("POST", "/datasets") in routes

        @settings_for_fuzzing
        @given(
            route=st.sampled_from(routes),
            param=PATH_PARAMS,
            body=BODIES,
            content_type=CONTENT_TYPES,
            headers=HEADERS,
            query=QUERIES,
        )
        def check(route, param, body, content_type, headers, query):
            method, template = route
            path = template
            for name in ("{item_id}", "{model_id}", "{job_id}", "{dataset_id}", "{name}"):
                path = path.replace(name, quote(param, safe=""))
            all_headers = dict(headers)
            if content_type is not None:
                all_headers["content-type"] = content_type
            before = h.store()
            r = c.request(method, path, content=body, headers=all_headers, params=query)
            assert r.status_code < 500, (method, path, all_headers, body[:200], r.text[:300])
            if r.status_code >= 400:
                assert h.store() == before, (method, path, r.status_code)

        check()
        assert unhandled_exceptions(c.get("/metrics").text) == 0
    h.check_nothing_leaked(server_paths(tmp_path))
