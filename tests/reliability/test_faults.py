"""Faults: broken models at start, onnxruntime failing inside a batch.

Covered elsewhere, not duplicated here (see docs/reliability.md):
- a broken new version at hot reload leaves the old one serving and says why:
  tests/integration/test_hot_reload.py::test_a_broken_new_version_leaves_the_old_one_serving_and_says_why
  (corrupt, truncated, missing, wrong signature), and under load:
  ...::test_reloads_under_a_steady_stream_of_requests_fail_none_of_them;
- SIGTERM during load: in-flight requests complete, exit 0:
  tests/integration/test_batching.py::test_sigterm_drains_in_flight_requests_and_exits_0.
"""

from __future__ import annotations

import concurrent.futures
import shutil
import time
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from model.data import VOCAB
from tests.integration.server import start_server
from tests.reliability.leaks import find_leak

POISON = "z"  # a query whose first token is this fails inside onnxruntime


def poisoned(src: Path, dst: Path) -> None:
    """The real graph plus a Gather whose table is one row too short for the POISON token id: a row that
    starts with POISON makes onnxruntime fail the whole run (index out of bounds); any other row, including
    the PAD rows of the warm-up, passes, and the logits are unchanged (the Gather is added times zero)."""
    model = onnx.load(str(src))
    g = model.graph
    for node in g.node:
        node.output[:] = ["logits_raw" if o == "logits" else o for o in node.output]
    table = numpy_helper.from_array(np.zeros(VOCAB.encode(POISON)[0], dtype=np.float32), "poison_table")
    g.initializer.extend(
        [
            table,
            numpy_helper.from_array(np.array([0], dtype=np.int64), "poison_start"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "poison_end"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "poison_axis"),
            numpy_helper.from_array(np.array(0.0, dtype=np.float32), "poison_zero"),
        ]
    )
    g.node.extend(
        [
            helper.make_node("Slice", ["tokens", "poison_start", "poison_end", "poison_axis"], ["first"]),
            helper.make_node("Gather", ["poison_table", "first"], ["picked"]),  # (B, 1)
            helper.make_node("Mul", ["picked", "poison_zero"], ["nothing"]),
            helper.make_node("Add", ["logits_raw", "nothing"], ["logits"]),
        ]
    )
    assert any(o.name == "logits" for o in g.output)
    onnx.save(model, str(dst))


@pytest.fixture(scope="module")
def poisoned_repository(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("poisoned") / "repo"
    shutil.copytree(model_repository, repo)
    for graph in repo.glob("*/*/model.onnx"):
        poisoned(graph, graph)
    return repo


def test_onnxruntime_failing_inside_a_batch_fails_only_that_batch_with_a_json_500(
    poisoned_repository: Path,
) -> None:
    env = {"FWS_MAX_QUEUE_DELAY_MS": "150"}  # so the bad and good requests below share one run
    with (
        start_server(env, repository=poisoned_repository) as srv,
        httpx.Client(base_url=srv.url, timeout=30) as c,
    ):
        assert c.post("/v1/retrieve", json={"sequence": "a1??a"}).json()["value"] == "1"

        r = c.post(
            "/v1/retrieve", json={"sequence": f"{POISON}1??{POISON}"}, headers={"X-Request-ID": "bad-1"}
        )
        assert r.status_code == 500
        assert r.headers["x-request-id"] == "bad-1"
        assert r.json()["error"]["code"] == "internal" and r.json()["error"]["message"]
        assert find_leak(r.text) is None, r.text

        # One poisoned row in a coalesced batch: every request of that run gets the 500, no answer is lost.
        def post(seq: str, rid: str) -> httpx.Response:
            return c.post("/v1/retrieve", json={"sequence": seq}, headers={"X-Request-ID": rid})

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(post, "a1??a", f"good-{i}") for i in range(5)]
            time.sleep(0.02)
            futures.append(pool.submit(post, f"{POISON}2??{POISON}", "bad-2"))
            answers = [f.result() for f in futures]
        assert answers[-1].status_code == 500
        for a in answers:
            assert a.status_code in (200, 500), a.text
            assert a.headers["x-request-id"] in {"bad-2"} | {f"good-{i}" for i in range(5)}
            if a.status_code == 200:
                assert a.json()["value"] == "1"
            else:
                assert a.json()["error"]["code"] == "internal"

        # V2: the protocol's error shape.
        v2 = c.post(
            "/v2/models/fastweights_t5/infer",
            json={"inputs": [{"name": "tokens", "datatype": "INT64", "shape": [1, 5],
                              "data": VOCAB.encode(f"{POISON}1??{POISON}")}]},
        )  # fmt: skip
        assert v2.status_code == 500 and isinstance(v2.json()["error"], str), v2.text
        assert find_leak(v2.text) is None, v2.text

        # The server keeps serving the rest.
        batch = c.post("/v1/retrieve/batch", json={"items": [{"sequence": "a1??a"}, {"sequence": "b7??b"}]})
        assert [x["value"] for x in batch.json()["results"]] == ["1", "7"]
        assert c.get("/v2/health/ready").status_code == 200
        assert srv.alive()


@pytest.mark.parametrize("damage", ["truncated", "random bytes", "empty file"])
def test_a_repository_whose_models_are_all_broken_fails_the_start_with_a_clear_error(
    damage: str, model_repository: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(model_repository / "fastweights_t5", repo / "fastweights_t5")
    graph = repo / "fastweights_t5" / "1" / "model.onnx"
    data = graph.read_bytes()
    graph.write_bytes(
        {
            "truncated": data[: len(data) // 2],
            "random bytes": np.random.default_rng(0).bytes(4096),
            "empty file": b"",
        }[damage]
    )
    srv = start_server(repository=repo, wait=False)
    try:
        code = srv.proc.wait(60)
    finally:
        srv.stop(5)
    logs = srv.logs()
    assert code != 0, logs[-2000:]
    assert "fastweights_t5" in logs and "could not load model.onnx" in logs
    assert "no model could be loaded" in logs


def test_one_broken_model_next_to_good_ones_is_reported_and_the_rest_serve(
    model_repository: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(model_repository, repo)
    graph = repo / "fastweights_t5" / "1" / "model.onnx"
    graph.write_bytes(graph.read_bytes()[:1000])
    with start_server(repository=repo) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        index = {row["name"]: row for row in c.post("/v2/repository/index").json()}
        assert index["fastweights_t5"]["state"] != "READY" and index["fastweights_t5"]["reason"]
        assert find_leak(index["fastweights_t5"]["reason"]) is None, index["fastweights_t5"]["reason"]
        assert c.post("/v1/retrieve", json={"sequence": "a1b2??b"}).json()["value"] == "2"
