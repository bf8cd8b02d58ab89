"""Hot reload through the V2 repository API, on a real server and a copy of the bundled repository.

A new version that is broken (truncated, garbage, missing, or without the contract's metadata) must leave the
serving version serving, and the load call must say why; a good new version is picked up; requests already
in flight finish on the version they started on.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
import tritonclient.http as httpclient
from fastapi.testclient import TestClient
from tritonclient.utils import InferenceServerException

from service.config import Settings
from service.main import create_app
from tests.integration.server import Server, edit_config, start_server

MODEL = "fastweights_t11"
T = 11
RUN_DELAY_S = 0.2


@pytest.fixture(scope="module")
def repo(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    shutil.copytree(model_repository / MODEL, root / MODEL)
    edit_config(root / MODEL, max_batch_size=1)  # one row per run (see reload_server)
    return root


@pytest.fixture(scope="module")
def reload_server(repo: Path) -> Iterator[Server]:
    # One row per run and a slow run, so that requests stay queued long enough to overlap a reload.
    env = {"FWS_SIMULATED_RUN_DELAY_MS": str(int(RUN_DELAY_S * 1000))}
    with start_server(env, repository=repo) as srv:
        yield srv


@pytest.fixture()
def tc(reload_server: Server) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(reload_server.url.removeprefix("http://"))
    yield client
    client.close()


def infer_body(sequence: str = "c9k8j3f1??c") -> dict:
    vocab = ["<pad>", *"abcdefghijklmnopqrstuvwxyz", *"0123456789", "?"]
    ids = [0] * (T - len(sequence)) + [vocab.index(ch) for ch in sequence]
    return {"inputs": [{"name": "tokens", "datatype": "INT64", "shape": [1, T], "data": ids}]}


def served_version(server: Server) -> str:
    r = httpx.post(f"{server.url}/v2/models/{MODEL}/infer", json=infer_body(), timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["model_version"]


def wait_for_queued_rows(server: Server, rows: int, timeout: float = 10.0) -> None:
    """Until the model's queue-depth gauge on /metrics reaches `rows`."""
    needle = f'fws_queue_depth_rows{{model="{MODEL}"}}'
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in httpx.get(f"{server.url}/metrics").text.splitlines():
            if line.startswith(needle) and float(line.split()[-1]) >= rows:
                return
        time.sleep(0.01)
    raise AssertionError(f"queue never reached {rows} rows")


def truncated(good: bytes) -> bytes:
    return good[: len(good) // 2]


def garbage(good: bytes) -> bytes:
    return b"this is not an onnx file\n" * 100


def without_metadata(good: bytes) -> bytes:
    model = onnx.load_from_string(good)
    del model.metadata_props[:]
    return model.SerializeToString()


BROKEN: dict[str, tuple[Callable[[bytes], bytes] | None, str]] = {
    "truncated": (truncated, "onnxruntime could not load"),
    "garbage": (garbage, "onnxruntime could not load"),
    "missing": (None, "no model.onnx"),
    "no_metadata": (without_metadata, "metadata"),
}


@pytest.mark.parametrize("kind", list(BROKEN))
def test_a_broken_new_version_leaves_the_old_one_serving_and_says_why(kind, repo, reload_server, tc):
    make, reason = BROKEN[kind]
    good = (repo / MODEL / "1" / "model.onnx").read_bytes()
    serving = served_version(reload_server)
    new = repo / MODEL / "9"  # newer than anything else here
    new.mkdir()
    try:
        if make is not None:
            (new / "model.onnx").write_bytes(make(good))
        with pytest.raises(InferenceServerException) as err:
            tc.load_model(MODEL)
        assert err.value.status() == "400"
        message = err.value.message()
        assert "version 9 failed" in message and f"still serving version {serving}" in message
        assert reason in message
        assert tc.is_model_ready(MODEL)
        assert tc.get_model_metadata(MODEL)["versions"] == [serving]
        assert served_version(reload_server) == serving
        (row,) = [r for r in tc.get_model_repository_index() if r["name"] == MODEL]
        assert row["state"] == "READY" and row["version"] == serving and reason in row["reason"]
        assert httpx.get(f"{reload_server.url}/v2/health/ready").status_code == 200
    finally:
        shutil.rmtree(new)


def test_a_good_new_version_is_picked_up_while_in_flight_requests_finish_on_theirs(repo, reload_server, tc):
    serving = served_version(reload_server)
    new = repo / MODEL / str(int(serving) + 1)
    new.mkdir()
    try:
        shutil.copy(repo / MODEL / "1" / "model.onnx", new / "model.onnx")
        results: list[tuple[float, httpx.Response]] = []
        lock = threading.Lock()
        go = threading.Barrier(8)

        def one(client: httpx.Client) -> None:
            go.wait()
            r = client.post(f"/v2/models/{MODEL}/infer", json=infer_body())
            with lock:
                results.append((time.monotonic(), r))

        # 8 requests queue behind each other on the old version (one row per run, RUN_DELAY_S each): ~1.6 s.
        shared = httpx.Client(base_url=reload_server.url, timeout=30)
        threads = [threading.Thread(target=one, args=(shared,)) for _ in range(8)]
        for t in threads:
            t.start()
        wait_for_queued_rows(reload_server, 2)  # one request running, the others queued on the old version
        tc.load_model(MODEL)  # returns once the new version is loaded, warmed up and swapped in
        swapped_at = time.monotonic()
        assert served_version(reload_server) == new.name
        for t in threads:
            t.join()
        shared.close()
        assert [r.status_code for _, r in results] == [200] * 8
        assert {r.json()["model_version"] for _, r in results} == {serving}
        assert any(done > swapped_at for done, _ in results), "no request was still in flight at the swap"
        # Same weights in both versions: the answers agree, so nothing was mixed up on the way.
        logits = [np.array(r.json()["outputs"][0]["data"]) for _, r in results]
        for other in logits[1:]:
            np.testing.assert_allclose(other, logits[0], rtol=1e-6)
        assert tc.get_model_metadata(MODEL)["versions"] == [new.name]
        assert tc.is_model_ready(MODEL, new.name) and not tc.is_model_ready(MODEL, serving)
        (row,) = [r for r in tc.get_model_repository_index() if r["name"] == MODEL]
        assert row == {"name": MODEL, "version": new.name, "state": "READY", "reason": ""}
    finally:
        # Keep the served version on disk (it stays the newest), so later loads see a consistent repository.
        pass


def test_reloads_under_a_steady_stream_of_requests_fail_none_of_them(repo, reload_server, tc):
    first = int(served_version(reload_server))
    versions = [str(first + i) for i in range(1, 4)]
    stop = threading.Event()
    responses: list[httpx.Response] = []
    lock = threading.Lock()

    def stream(client: httpx.Client) -> None:
        while not stop.is_set():
            r = client.post(f"/v2/models/{MODEL}/infer", json=infer_body())
            with lock:
                responses.append(r)

    with httpx.Client(base_url=reload_server.url, timeout=30) as shared:
        threads = [threading.Thread(target=stream, args=(shared,)) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            for v in versions:
                (repo / MODEL / v).mkdir()
                shutil.copy(repo / MODEL / "1" / "model.onnx", repo / MODEL / v / "model.onnx")
                tc.load_model(MODEL)
                time.sleep(RUN_DELAY_S)
        finally:
            stop.set()
            for t in threads:
                t.join()
    assert responses and all(r.status_code == 200 for r in responses), [r.text for r in responses[:3]]
    assert {r.json()["model_version"] for r in responses} <= {str(first), *versions}
    assert served_version(reload_server) == versions[-1]


def test_a_swap_between_validation_and_submit_is_retried_on_the_new_version(model_repository, tmp_path):
    """Force the race: a reload lands after the route validated against version 1 but before it queued."""
    shutil.copytree(model_repository / MODEL, tmp_path / MODEL)
    app = create_app(Settings(model_repository=tmp_path, device="cpu", ort_intra_op_threads=1))
    with TestClient(app) as client:
        registry = app.state.registry
        original = registry.infer
        swaps = []

        async def infer_after_a_swap(name, tokens, version=None, deadline=None):
            if not swaps:
                new = tmp_path / MODEL / "2"
                new.mkdir()
                shutil.copy(tmp_path / MODEL / "1" / "model.onnx", new / "model.onnx")
                swaps.append(await registry.load(name))
            return await original(name, tokens, version, deadline)

        registry.infer = infer_after_a_swap
        r = client.post(f"/v2/models/{MODEL}/infer", json=infer_body())
        assert r.status_code == 200, r.text
        assert r.json()["model_version"] == "2" and len(swaps) == 1
        pinned = client.post(f"/v2/models/{MODEL}/versions/1/infer", json=infer_body())
        assert pinned.status_code == 404 and "no version '1'" in pinned.json()["error"]
