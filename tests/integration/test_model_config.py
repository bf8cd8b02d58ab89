"""Each model obeys its config.pbtxt, Triton-style: batching, version policy; /config reports what is in
effect, a reload reads the file again. On a real server and a copy of the bundled repository."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from contract import VersionPolicy
from contract.vocab import DEFAULT_TOKENS
from tests.integration.server import Server, edit_config, repository_with, start_server
from tests.integration.test_batching import metric

T11 = "fastweights_t11"
T5 = "fastweights_t5"
# Long enough that 8 requests sent at once all queue before the first run starts, even on a loaded machine.
DELAY_US = 1_000_000


def body(sequence: str, seq_len: int) -> dict:
    ids = [0] * (seq_len - len(sequence)) + [DEFAULT_TOKENS.index(ch) for ch in sequence]
    return {"inputs": [{"name": "tokens", "datatype": "INT64", "shape": [1, seq_len], "data": ids}]}


def send_at_once(server: Server, n: int) -> list[httpx.Response]:
    """`n` one-row V2 requests to T11, sent together from `n` threads."""
    out: list[httpx.Response] = []
    lock, go = threading.Lock(), threading.Barrier(n)

    def one(i: int) -> None:
        go.wait()
        r = httpx.post(f"{server.url}/v2/models/{T11}/infer", json=body(f"a{i}??a", 11), timeout=30)
        with lock:
            out.append(r)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def runs(server: Server) -> tuple[float, float]:
    """(onnxruntime runs, rows) of T11 so far, from the batch-size histogram on /metrics."""
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    return (
        metric(text, "fws_batch_size_rows_count", model=T11),
        metric(text, "fws_batch_size_rows_sum", model=T11),
    )


@pytest.fixture
def repo(model_repository: Path, tmp_path: Path) -> Path:
    return repository_with(
        tmp_path, model_repository, names=(T5, T11), max_batch_size=4, preferred_batch_sizes=(4,)
    )


@pytest.fixture
def server(repo: Path) -> Iterator[Server]:
    edit_config(repo / T11, max_batch_size=8, max_queue_delay_us=DELAY_US)
    # Server-wide defaults that the config overrides (and that apply where it says nothing).
    env = {"FWS_MAX_BATCH_SIZE": "64", "FWS_MAX_QUEUE_ROWS": "100", "FWS_REQUEST_TIMEOUT_S": "20"}
    with start_server(env, repository=repo) as srv:
        yield srv


def test_a_change_to_config_pbtxt_changes_the_batching_reported_and_measured(repo, server):
    config = httpx.get(f"{server.url}/v2/models/{T11}/config").json()
    assert config["max_batch_size"] == 8
    assert config["dynamic_batching"]["preferred_batch_size"] == [4]
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == DELAY_US
    queue = config["dynamic_batching"]["default_queue_policy"]
    assert queue["max_queue_size"] == 100 and queue["default_timeout_microseconds"] == 20_000_000  # FWS_
    assert config["version_policy"] == {"latest": {"num_versions": 1}}

    before = runs(server)
    answers = send_at_once(server, 8)
    assert [r.status_code for r in answers] == [200] * 8
    after = runs(server)
    assert (after[0] - before[0], after[1] - before[1]) == (2, 8)  # two runs of the preferred 4 rows

    def reload_and_measure(**changes: object) -> tuple[dict, tuple[float, float]]:
        edit_config(repo / T11, **changes)
        load = httpx.post(f"{server.url}/v2/repository/models/{T11}/load", timeout=60)
        assert load.status_code == 200, load.text
        before = runs(server)
        answers = send_at_once(server, 8)
        assert [r.status_code for r in answers] == [200] * 8
        after = runs(server)
        return httpx.get(f"{server.url}/v2/models/{T11}/config").json(), (
            after[0] - before[0],
            after[1] - before[1],
        )

    config, measured = reload_and_measure(preferred_batch_sizes=(), max_queue_size=50)
    assert config["max_batch_size"] == 8 and "preferred_batch_size" not in config["dynamic_batching"]
    assert config["dynamic_batching"]["default_queue_policy"]["max_queue_size"] == 50
    assert measured == (1, 8)  # no preferred size: one run of all 8 rows

    config, measured = reload_and_measure(max_batch_size=2)
    assert config["max_batch_size"] == 2
    assert measured == (4, 8)  # four runs of the new max_batch_size

    # The other model kept its own config: no delay there (the server's default), max_batch_size 4.
    t5 = httpx.get(f"{server.url}/v2/models/{T5}/config").json()
    assert t5["max_batch_size"] == 4 and t5["dynamic_batching"]["max_queue_delay_microseconds"] == 0
    too_big = body("a1??a", 5)
    too_big["inputs"][0].update(shape=[5, 5], data=too_big["inputs"][0]["data"] * 5)
    r = httpx.post(f"{server.url}/v2/models/{T5}/infer", json=too_big, timeout=30)
    assert r.status_code == 400 and "max_batch_size 4" in r.json()["error"]


def test_the_version_policy_decides_which_versions_serve(repo, server):
    for v in ("2", "3"):
        shutil.copytree(repo / T5 / "1", repo / T5 / v)

    def reload_with(policy: VersionPolicy) -> list[str]:
        edit_config(repo / T5, version_policy=policy)
        r = httpx.post(f"{server.url}/v2/repository/models/{T5}/load", timeout=60)
        assert r.status_code == 200, r.text
        config = httpx.get(f"{server.url}/v2/models/{T5}/config").json()
        assert config["version_policy"] == policy.as_json()
        return httpx.get(f"{server.url}/v2/models/{T5}").json()["versions"]

    def status(version: str) -> int:
        return httpx.post(
            f"{server.url}/v2/models/{T5}/versions/{version}/infer", json=body("a1??a", 5), timeout=30
        ).status_code

    assert reload_with(VersionPolicy("latest", 2)) == ["2", "3"]
    assert [status(v) for v in "123"] == [404, 200, 200]
    rows = [r for r in httpx.post(f"{server.url}/v2/repository/index").json() if r["name"] == T5]
    assert [(r["version"], r["state"]) for r in rows] == [("2", "READY"), ("3", "READY")]
    unversioned = httpx.post(f"{server.url}/v2/models/{T5}/infer", json=body("a1??a", 5), timeout=30)
    assert unversioned.json()["model_version"] == "3"  # a request naming no version gets the newest

    assert reload_with(VersionPolicy("specific", versions=(1,))) == ["1"]
    assert [status(v) for v in "123"] == [200, 404, 404]
    assert reload_with(VersionPolicy("all")) == ["1", "2", "3"]
    assert [status(v) for v in "123"] == [200, 200, 200]

    edit_config(repo / T5, version_policy=VersionPolicy("specific", versions=(7,)))
    r = httpx.post(f"{server.url}/v2/repository/models/{T5}/load", timeout=60)
    assert r.status_code == 400 and "selects none of the versions [1, 2, 3]" in r.json()["error"]
    assert [status(v) for v in "123"] == [200, 200, 200]  # the old versions keep serving


def test_config_parameters_hold_what_config_pbtxt_gives_a_triton_client(model_repository, server):
    """The README's tritonclient code reads vocab, PAD id, answer classes and T from get_model_config: this
    server's answer must decode to what the config.pbtxt file holds (what a Triton server would return)."""
    import json

    from contract import read_config_pbtxt

    served = httpx.get(f"{server.url}/v2/models/{T11}/config").json()["parameters"]
    in_file = read_config_pbtxt(model_repository / T11 / "config.pbtxt").parameters
    for key in ("vocab", "pad_id", "answer_classes", "seq_len"):
        assert json.loads(served[key]["string_value"]) == json.loads(in_file[key]), key
