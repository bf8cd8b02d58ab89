"""Hot reload checks a new version against the model's config.pbtxt and the serving version (issue 15), and
version folders are ASCII digits only; on a real server and a copy of the bundled repository."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from contract.vocab import DEFAULT_TOKENS
from tests.integration.server import Server, start_server

T5, T11 = "fastweights_t5", "fastweights_t11"


@pytest.fixture
def repo(model_repository: Path, tmp_path: Path) -> Path:
    for name in (T5, T11):
        shutil.copytree(model_repository / name, tmp_path / name)
    return tmp_path


@pytest.fixture
def server(repo: Path) -> Iterator[Server]:
    with start_server(repository=repo) as srv:
        yield srv


def infer(server: Server, name: str, sequence: str, seq_len: int) -> httpx.Response:
    ids = [0] * (seq_len - len(sequence)) + [DEFAULT_TOKENS.index(ch) for ch in sequence]
    body = {"inputs": [{"name": "tokens", "datatype": "INT64", "shape": [1, seq_len], "data": ids}]}
    return httpx.post(f"{server.url}/v2/models/{name}/infer", json=body, timeout=30)


def index_rows(server: Server, name: str) -> list[dict[str, str]]:
    rows = httpx.post(f"{server.url}/v2/repository/index", timeout=30).json()
    return [r for r in rows if r["name"] == name]


def assert_t5_still_serves_version_1(server: Server) -> None:
    r = infer(server, T5, "a1??a", 5)
    assert r.status_code == 200, r.text
    assert r.json()["model_version"] == "1" and r.json()["outputs"][0]["shape"] == [1, 10]
    assert httpx.get(f"{server.url}/v2/models/{T5}/ready").status_code == 200


def test_a_new_version_with_another_input_shape_is_refused_and_the_old_one_keeps_serving(repo, server):
    (repo / T5 / "2").mkdir()
    shutil.copy(repo / T11 / "1" / "model.onnx", repo / T5 / "2" / "model.onnx")
    r = httpx.post(f"{server.url}/v2/repository/models/{T5}/load", timeout=60)
    assert r.status_code == 400, r.text
    message = r.json()["error"]
    assert "version 2 failed, still serving version 1" in message
    assert "input 'tokens' has shape ['batch', 11], config.pbtxt declares ['batch', 5]" in message
    assert_t5_still_serves_version_1(server)
    (row,) = index_rows(server, T5)
    assert row["state"] == "READY" and row["version"] == "1" and "config.pbtxt declares" in row["reason"]


def test_a_new_version_matching_an_edited_config_but_not_the_serving_version_is_refused(repo, server):
    """The config was edited to the new graph's shape: the serving version's signature still differs."""
    (repo / T5 / "2").mkdir()
    shutil.copy(repo / T11 / "1" / "model.onnx", repo / T5 / "2" / "model.onnx")
    config = (repo / T11 / "config.pbtxt").read_text().replace(f'"{T11}"', f'"{T5}"')
    (repo / T5 / "config.pbtxt").write_text(config)
    r = httpx.post(f"{server.url}/v2/repository/models/{T5}/load", timeout=60)
    assert r.status_code == 400, r.text
    message = r.json()["error"]
    assert "input 'tokens' has shape ['batch', 11], the serving version 1 has ['batch', 5]" in message
    assert_t5_still_serves_version_1(server)


def test_a_new_version_of_another_family_is_refused(repo, server):
    import onnx

    graph = onnx.load(str(repo / T5 / "1" / "model.onnx"))
    for prop in graph.metadata_props:
        if prop.key == "fastweights.family":
            prop.value = "lstm"
    (repo / T5 / "2").mkdir()
    onnx.save(graph, str(repo / T5 / "2" / "model.onnx"))
    r = httpx.post(f"{server.url}/v2/repository/models/{T5}/load", timeout=60)
    assert r.status_code == 400, r.text
    assert "family 'lstm'" in r.json()["error"] and "'fastweights'" in r.json()["error"]
    assert_t5_still_serves_version_1(server)


@pytest.mark.parametrize("folder", ["²", "٣", "v2", "02", "1.5"])
def test_a_version_folder_not_named_by_ascii_digits_is_ignored_and_listed_with_a_reason(folder, repo, server):
    odd = repo / T5 / folder
    odd.mkdir()
    shutil.copy(repo / T5 / "1" / "model.onnx", odd / "model.onnx")
    rows = index_rows(server, T5)
    assert {"name": T5, "version": "1", "state": "READY", "reason": ""} in rows
    (ignored,) = [r for r in rows if r["version"] == folder]
    assert ignored["state"] == "UNAVAILABLE" and "ASCII digits" in ignored["reason"]
    load = httpx.post(f"{server.url}/v2/repository/models/{T5}/load", timeout=60)
    assert load.status_code == 200 and load.json()["version"] == "1", load.text
    for path in (f"/v2/models/{T5}/versions/{folder}", f"/v2/models/nope_{folder}", f"/v2/models/{T5}"):
        r = httpx.get(server.url + path, timeout=30)
        assert r.status_code < 500, (path, r.status_code, r.text)
    assert httpx.get(f"{server.url}/v2/models/nope_{folder}").status_code in (400, 404)
    assert_t5_still_serves_version_1(server)


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (
            lambda text: text.replace("max_batch_size: 256", "max_batch_size: -4"),
            "max_batch_size must be >= 0",
        ),
        (lambda text: text + "\ninstance_group [ { count: 0 } ]\n", "instance_group count must be >= 1"),
        (lambda text: text + "\nversion_policy { newest { } }\n", "version_policy must be one of"),
        (lambda text: text.replace("input [", "input [[["), "config.pbtxt"),
    ],
    ids=["negative-batch", "zero-instances", "unknown-policy", "syntax"],
)
def test_a_bad_config_is_refused_at_reload_and_the_old_version_keeps_serving(edit, reason, repo, server):
    config = repo / T5 / "config.pbtxt"
    config.write_text(edit(config.read_text()))
    r = httpx.post(f"{server.url}/v2/repository/models/{T5}/load", timeout=60)
    assert r.status_code == 400, r.text
    assert "still serving version 1" in r.json()["error"] and reason in r.json()["error"]
    assert str(repo) not in r.json()["error"]  # the reason names the file, not the server's paths
    assert_t5_still_serves_version_1(server)
    (row,) = index_rows(server, T5)
    assert row["state"] == "READY" and reason in row["reason"]
