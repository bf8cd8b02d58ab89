"""The model registry without HTTP: load everything, infer, hot reload (good and broken), unload, index."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model.data import generate
from service.config import Settings
from service.predictor import ModelLoadError
from service.registry import ModelNotFoundError, ModelNotReadyError, ModelRegistry

REPO = Path(__file__).resolve().parents[2] / "model_repository"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    for name in ("fastweights_t5", "fastweights_t11"):
        shutil.copytree(REPO / name, tmp_path / name)
    return tmp_path


def with_registry(repo: Path, body: Callable[[ModelRegistry], Awaitable[Any]], **settings: Any) -> Any:
    async def main() -> Any:
        registry = ModelRegistry(Settings(model_repository=repo, device="cpu", **settings))
        failures = await registry.start()
        assert failures == []
        try:
            return await body(registry)
        finally:
            await registry.close()

    return asyncio.run(main())


def test_start_loads_every_model_and_infer_goes_through_the_batcher(repo: Path) -> None:
    async def body(r: ModelRegistry) -> None:
        assert r.ready
        assert [m.info.name for m in r.family_buckets("fastweights")] == ["fastweights_t5", "fastweights_t11"]
        batch = generate(64, 1, 4, seed=5, length=11)
        out = await r.infer("fastweights_t11", batch.tokens)
        assert out["logits"].shape == (64, 10) and out["memory_attention"].shape == (64, 11)
        assert (out["logits"].argmax(1) == batch.targets).mean() >= 0.95
        assert r.index() == [
            {"name": "fastweights_t11", "version": "1", "state": "READY", "reason": ""},
            {"name": "fastweights_t5", "version": "1", "state": "READY", "reason": ""},
        ]

    with_registry(repo, body)


def test_infer_rejects_unknown_models_versions_and_bad_tokens(repo: Path) -> None:
    async def body(r: ModelRegistry) -> None:
        with pytest.raises(ModelNotFoundError, match="unknown model"):
            await r.infer("nope", np.zeros((1, 5), dtype=np.int64))
        with pytest.raises(ModelNotFoundError, match="no version '7'"):
            await r.infer("fastweights_t5", np.zeros((1, 5), dtype=np.int64), version="7")
        with pytest.raises(ValueError, match=r"shape \(B>=1, 5\)"):
            await r.infer("fastweights_t5", np.zeros((1, 11), dtype=np.int64))
        with pytest.raises(ValueError, match="token ids"):
            await r.infer("fastweights_t5", np.full((1, 5), 99, dtype=np.int64))

    with_registry(repo, body)


def test_a_broken_new_version_leaves_the_old_one_serving_and_says_why(repo: Path) -> None:
    async def body(r: ModelRegistry) -> None:
        (repo / "fastweights_t5" / "2").mkdir()
        (repo / "fastweights_t5" / "2" / "model.onnx").write_bytes(b"garbage")
        with pytest.raises(ModelLoadError):
            await r.load("fastweights_t5")
        assert r.get("fastweights_t5").info.version == "1"
        (row,) = [x for x in r.index() if x["name"] == "fastweights_t5"]
        assert row["state"] == "READY" and row["version"] == "1"
        assert "version 2 failed, still serving version 1" in row["reason"]
        out = await r.infer("fastweights_t5", np.zeros((2, 5), dtype=np.int64))
        assert out["logits"].shape == (2, 10)

    with_registry(repo, body)


def test_a_reload_swaps_versions_while_in_flight_requests_finish_on_the_old_one(repo: Path) -> None:
    async def body(r: ModelRegistry) -> None:
        old_batcher = r._entries["fastweights_t5"].served[r.get("fastweights_t5").info.version].batcher
        assert old_batcher is not None
        tokens = generate(8, 1, 1, seed=1, length=5).tokens
        in_flight = [asyncio.ensure_future(r.infer("fastweights_t5", tokens)) for _ in range(3)]
        await asyncio.sleep(0.05)  # the run is busy (simulated slow model) when the reload starts
        shutil.copytree(repo / "fastweights_t5" / "1", repo / "fastweights_t5" / "2")
        new = await r.load("fastweights_t5")
        assert new.info.version == "2" and r.get("fastweights_t5").info.version == "2"
        for fut in in_flight:
            assert (await fut)["logits"].shape == (8, 10)
        new_batcher = r._entries["fastweights_t5"].served[r.get("fastweights_t5").info.version].batcher
        assert new_batcher is not None and new_batcher is not old_batcher
        assert old_batcher.runs >= 1 and new_batcher.runs == 0  # they all ran on the old version
        assert (await r.infer("fastweights_t5", tokens))["logits"].shape == (8, 10)

    with_registry(repo, body, simulated_run_delay_ms=150)


def test_unload_stops_serving_and_load_brings_it_back(repo: Path) -> None:
    async def body(r: ModelRegistry) -> None:
        await r.unload("fastweights_t5")
        with pytest.raises(ModelNotReadyError, match="not ready"):
            await r.infer("fastweights_t5", np.zeros((1, 5), dtype=np.int64))
        assert {
            "name": "fastweights_t5",
            "version": "1",
            "state": "UNAVAILABLE",
            "reason": "unloaded",
        } in r.index()
        assert r.ready  # t11 still serves
        await r.load("fastweights_t5")
        assert r.is_ready("fastweights_t5")
        with pytest.raises(ModelNotFoundError):
            await r.unload("nope")
        with pytest.raises(ModelNotFoundError):
            await r.load("nope")

    with_registry(repo, body)


def test_a_repository_without_models_is_not_ready(tmp_path: Path) -> None:
    async def main() -> None:
        r = ModelRegistry(Settings(model_repository=tmp_path))
        assert await r.start() == []
        assert not r.ready and r.index() == []
        await r.close()

    asyncio.run(main())


def test_a_model_that_fails_to_load_at_start_is_reported_and_the_rest_serve(repo: Path) -> None:
    (repo / "broken" / "1").mkdir(parents=True)
    (repo / "broken" / "1" / "model.onnx").write_bytes(b"nope")
    config = (repo / "fastweights_t5" / "config.pbtxt").read_text()
    (repo / "broken" / "config.pbtxt").write_text(config.replace('"fastweights_t5"', '"broken"'))

    async def main() -> None:
        r = ModelRegistry(Settings(model_repository=repo, device="cpu"))
        failures = await r.start()
        assert [f.name for f in failures] == ["broken"]
        assert r.ready
        (row,) = [x for x in r.index() if x["name"] == "broken"]
        assert row["state"] == "UNAVAILABLE" and "could not load" in row["reason"]
        with pytest.raises(ModelNotReadyError):
            r.get("broken")
        await r.close()

    asyncio.run(main())
