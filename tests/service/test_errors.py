"""Bad input, limits and auth: the right 4xx with a specific detail, nothing half-written, never a 500."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import orjson
import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from service_helpers import BAD_BODIES, GOOD, LIMITS, blobs, make_settings, model_dir, vector_items

from service.app import create_app

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def client(tmp_path) -> Iterator[TestClient]:
    settings = make_settings(tmp_path, model=model_dir(), max_body_bytes=64 * 1024, **LIMITS)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def _raw(c: TestClient, path: str, body: bytes) -> object:
    return c.post(path, content=body, headers={"content-type": "application/json"})


@pytest.mark.parametrize(("path", "body", "status", "words"), BAD_BODIES)
def test_bad_requests_get_specific_4xx(client, path, body, status, words):
    r = client.post(path, json=body)
    assert r.status_code == status, r.text
    assert words in str(r.json()["detail"])


def test_nan_and_invalid_json_are_rejected(client):
    for body in (
        b'{"items": [[NaN, 1, 1, 1, 1, 1, 1, 1]]}',
        b'{"items": [[Infinity]]}',
        b'{"items": [',
        b"\xff",
    ):
        r = _raw(client, "/embed", body)
        assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/verify", b'{"a": {"vector": [1,1,1,1,1,1,1,1]}, "b": [1,1,1,1,1,1,1,1], "threshold": NaN}'),
        ("/classify", b'{"items": [[1,1,1,1,1,1,1,1]], "threshold": -Infinity}'),
        ("/search", b'{"item": [1,1,1,1,1,1,1,1], "k": 1180591620717411303424}'),
        ("/train", b'{"dataset": "digits", "seed": 1180591620717411303424, "lr": NaN}'),
        ("/items?limit=1", b'{"items": [{"vector": [1,1,1,1,1,1,1,1], "metadata": {"x": NaN}}]}'),
    ],
)
def test_unencodable_inputs_echoed_in_422_do_not_become_500(client, path, body):
    """A 422 echoes the offending input; NaN or a 70-bit integer there must not break the response."""
    r = _raw(client, path, body)
    assert r.status_code in (400, 422), r.text
    assert r.json()["detail"]


def test_empty_index_and_unknown_ids(client):
    for path, body in [("/search", {"item": GOOD}), ("/classify", {"items": [GOOD]})]:
        r = client.post(path, json=body)
        assert r.status_code == 409 and "index is empty" in r.json()["detail"]
    assert client.get("/items/nope").status_code == 404
    assert client.get("/models/nope").status_code == 404
    assert client.get("/items", params={"limit": -1}).status_code == 422
    assert client.get("/items", params={"offset": 10**20}).status_code == 422


def test_a_bad_item_writes_nothing(client):
    x, y = blobs(3)
    items = vector_items(x, y)
    items[5]["vector"] = [1.0, 2.0]  # wrong dimension, after five good ones
    r = client.post("/items", json={"items": items})
    assert r.status_code == 422 and "item 5" in r.json()["detail"]
    assert client.get("/items").json()["total"] == 0 and client.get("/info").json()["index"]["size"] == 0


def test_a_failing_index_add_rolls_back_the_database(client):
    state = client.app.state.service

    def broken_add(keys, vectors):
        raise RuntimeError("faiss exploded")

    runtime = state.collections.default.runtime
    runtime.index.add = broken_add
    r = client.post("/items", json={"items": [{"id": "x", "vector": GOOD}]})
    assert r.status_code == 500
    del runtime.index.add
    assert client.get("/items/x").status_code == 404 and client.get("/items").json()["total"] == 0
    assert client.post("/items", json={"items": [{"id": "x", "vector": GOOD}]}).status_code == 201


def test_body_limit_by_content_length_and_by_streamed_bytes(client):
    big = orjson.dumps({"items": [[0.5] * 8] * 2000})
    assert len(big) > 64 * 1024
    r = _raw(client, "/embed", big)
    assert r.status_code == 413 and "65536 bytes" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the middleware counts what arrives
        for i in range(0, len(big), 4096):
            yield big[i : i + 4096]

    r = client.post("/embed", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "--max-body-bytes" in r.json()["detail"]
    assert client.post("/embed", json={"items": [GOOD]}).status_code == 200


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
FIELDS = st.sampled_from(["items", "item", "k", "a", "b", "threshold", "weighting", "label", "id", "vector"])


def _dumps(value: object) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # integers beyond 64 bits: the stdlib writes them (and Infinity) anyway
        return json.dumps(value).encode()


BODIES = st.one_of(
    JSON.map(_dumps),
    st.dictionaries(FIELDS, JSON, max_size=4).map(_dumps),
    st.binary(max_size=40),
)


def test_fuzzed_bodies_never_get_a_500(client):
    x, y = blobs(2)
    client.post("/items", json={"items": vector_items(x, y)})
    paths = ["/embed", "/items", "/search", "/similarity", "/verify", "/classify", "/models/x/activate"]

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(path=st.sampled_from(paths), body=BODIES)
    def check(path, body):
        r = _raw(client, path, body)
        assert r.status_code < 500, (path, body, r.text)

    check()
    targeted = [
        ("/search", {"item": {"id": 5}}),
        ("/search", {"item": {"vector": "abc"}}),
        ("/items", {"items": [{"vector": GOOD, "metadata": [1]}]}),
        ("/items", {"items": [{"vector": GOOD, "label": ""}]}),
        ("/classify", {"items": [GOOD], "k": "many"}),
        ("/classify", {"items": [GOOD], "threshold": "x"}),
        ("/verify", {"a": {"id": "i0"}, "b": {"image": base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()}}),
        ("/embed", {"items": [{"image": base64.b64encode(b"GIF89a" + b"\0" * 20).decode()}]}),
        ("/embed", {"items": [[[1.0] * 8]]}),
        ("/embed", {"items": "x" * 100}),
    ]
    for path, body in targeted:
        r = client.post(path, json=body)
        assert 400 <= r.status_code < 500, (path, body, r.text)
    assert client.get("/items", params={"limit": "many"}).status_code == 422


def _concrete(path: str) -> str:
    return path.replace("{item_id}", "i0").replace("{model_id}", "toy-vec").replace("{name}", "default")


def _paths(app) -> list[tuple[str, str]]:
    """Every (method, path) the app serves, docs included, from the routes themselves."""
    out = []
    for context in iter_route_contexts(app.routes):  # FastAPI 0.16x nests included routers in app.routes
        path = _concrete(context.path)  # with the prefix it was included under
        out += [(method, path) for method in sorted(context.methods or []) if method != "HEAD"]
    return out


def test_api_key_guards_every_route_but_health_and_ready(tmp_path):
    app = create_app(make_settings(tmp_path, model=model_dir(), api_key="s3cret"))
    with TestClient(app) as c:
        routes = _paths(app)
        served = {path for _, path in routes}
        assert {"/docs", "/openapi.json", "/metrics", "/models/toy-vec/activate"} <= served
        assert {_concrete(p) for p in app.openapi()["paths"]} <= served
        for method, path in routes:
            if path in ("/health", "/ready", "/"):
                assert c.request(method, path).status_code == 200
                continue
            if path.startswith("/console/"):  # the console's own files are public; its API calls are not
                assert c.request(method, "/console/js/app.js").status_code == 200
                continue
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
                r = c.request(method, path, headers=headers)
                assert r.status_code == 401, (method, path, headers)
                assert r.headers["www-authenticate"].startswith("Bearer")
            ok = c.request(method, path, headers={"Authorization": "Bearer s3cret"}, json={})
            assert ok.status_code != 401, (method, path)
        assert c.get("/nowhere").status_code == 401  # unknown paths too: nothing to probe
