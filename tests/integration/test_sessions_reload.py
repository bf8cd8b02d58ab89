"""Memory sessions across a hot reload of the stream model: a session whose state an older version computed is
run again through the new version, so no answer mixes two versions' weights."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tests.integration.server import Server, start_server

STREAM = "fastweights_stream"
PAIRS = [["c", "9"], ["k", "8"], ["j", "3"], ["f", "1"], ["q", "5"]]


@pytest.fixture(scope="module")
def reload_server(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    repo = tmp_path_factory.mktemp("repo")
    for folder in model_repository.iterdir():
        if folder.is_dir():
            shutil.copytree(folder, repo / folder.name)
    with start_server({"FWS_LOG_LEVEL": "warning"}, repository=repo) as srv:
        srv.repo = repo  # type: ignore[attr-defined]
        yield srv


def install_changed_version(repo: Path, version: str) -> None:
    """Version `version` of the stream model: version 1 with noise (seeded by `version`) added to its
    recurrent and input weights, so the state it computes for the same pairs differs from every other
    version's (the contract, names and metadata stay as they are)."""
    graph = onnx.load(repo / STREAM / "1" / "model.onnx")
    rng = np.random.default_rng(int(version))
    for init in graph.graph.initializer:
        if init.name.startswith(("recurrent", "x_table")):
            weights = numpy_helper.to_array(init)
            noise = rng.normal(0.0, 0.5 * float(weights.std()), weights.shape).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array(weights + noise, init.name))
    (repo / STREAM / version).mkdir()
    onnx.save(graph, repo / STREAM / version / "model.onnx")


def new_session(client: httpx.Client, pairs: list[list[str]]) -> str:
    r = client.post("/v1/sessions", json={"pairs": pairs})
    assert r.status_code == 201, r.text
    return r.json()["session_id"]


def ask(client: httpx.Client, sid: str, key: str) -> dict:
    r = client.post(f"/v1/sessions/{sid}/query", json={"query": key, "top_k": 3, "explain": True})
    assert r.status_code == 200, r.text
    return r.json()


def weights_of(answer: dict) -> list[float]:
    """The attention weight on each stored pair, in the session's order."""
    return [e["weight"] for e in answer["explanation"]]


def replays(client: httpx.Client) -> float:
    (line,) = [
        x for x in client.get("/metrics").text.splitlines() if x.startswith("fws_session_replays_total")
    ]
    return float(line.split()[-1])


def test_a_session_from_the_old_version_answers_as_a_new_session_of_the_new_version(
    reload_server: Server,
) -> None:
    with httpx.Client(base_url=reload_server.url, timeout=30) as client:
        old = new_session(client, PAIRS)
        before = ask(client, old, "j")
        assert before["version"] == "1" and before["value"] == "3"
        install_changed_version(reload_server.repo, "2")  # type: ignore[attr-defined]
        r = client.post(f"/v2/repository/models/{STREAM}/load")
        assert r.status_code == 200, r.text
        assert client.get(f"/v2/models/{STREAM}").json()["versions"] == ["2"]

        fresh = new_session(client, PAIRS)  # every step computed by version 2
        want = ask(client, fresh, "j")
        assert want["version"] == "2"
        # The change is visible: a state kept from version 1 would answer with other attention weights.
        assert max(abs(a - b) for a, b in zip(weights_of(want), weights_of(before), strict=True)) > 1e-3
        replayed = replays(client)

        for _ in range(2):
            got = ask(client, old, "j")  # the old session, queried under version 2
            assert got["version"] == "2" and got["value"] == want["value"]
            assert got["confidence"] == pytest.approx(want["confidence"], abs=1e-6)
            assert weights_of(got) == pytest.approx(weights_of(want), abs=1e-6)
        assert replays(client) == replayed + 1  # replayed once and stored, not on every query
        assert client.get(f"/v1/sessions/{old}").json()["version"] == "2"

        # Both sessions go on alike: an append to each, then every key answers the same.
        for sid in (old, fresh):
            r = client.post(f"/v1/sessions/{sid}/pairs", json={"pairs": [["z", "7"]], "seq": 0})
            assert r.status_code == 200 and r.json()["version"] == "2", r.text
        for key in ("c", "z", "q"):
            a, b = ask(client, old, key), ask(client, fresh, key)
            assert a["value"] == b["value"] and weights_of(a) == pytest.approx(weights_of(b), abs=1e-6)
        assert replays(client) == replayed + 1


VOCAB = ["<pad>", *"abcdefghijklmnopqrstuvwxyz", *"0123456789", "?"]


def v2_step(client: httpx.Client, sequence_id: int, chunk: str, start: bool = False) -> dict:
    """One V2 request on the stream model: a pair ('c9', left padded) or a question ('??c')."""
    ids = [0] * (3 - len(chunk)) + [VOCAB.index(ch) for ch in chunk]
    body = {
        "parameters": {"sequence_id": sequence_id, "sequence_start": start},
        "inputs": [{"name": "tokens", "datatype": "INT64", "shape": [1, 3], "data": ids}],
    }
    r = client.post(f"/v2/models/{STREAM}/infer", json=body)
    assert r.status_code == 200, r.text
    return {o["name"]: o["data"] for o in r.json()["outputs"]} | {"version": r.json()["model_version"]}


def test_a_v2_sequence_from_the_old_version_answers_as_a_new_sequence_of_the_new_version(
    reload_server: Server,
) -> None:
    with httpx.Client(base_url=reload_server.url, timeout=30) as client:
        version = client.get(f"/v2/models/{STREAM}").json()["versions"][-1]
        for i, (k, v) in enumerate(PAIRS):
            v2_step(client, 101, k + v, start=i == 0)
        before = v2_step(client, 101, "??k")
        newer = str(int(version) + 1)
        install_changed_version(reload_server.repo, newer)  # type: ignore[attr-defined]
        assert client.post(f"/v2/repository/models/{STREAM}/load").status_code == 200
        for i, (k, v) in enumerate(PAIRS):
            v2_step(client, 202, k + v, start=i == 0)  # every step by the new version
        want = v2_step(client, 202, "??k")
        assert want["version"] == newer
        changed = zip(want["memory_attention"], before["memory_attention"], strict=True)
        assert max(abs(a - b) for a, b in changed) > 1e-3  # the change is visible
        got = v2_step(client, 101, "??k")  # the old sequence, asked under the new version
        assert got["version"] == newer
        assert got["logits"] == pytest.approx(want["logits"], abs=1e-5)
        assert got["memory_attention"] == pytest.approx(want["memory_attention"], abs=1e-6)
