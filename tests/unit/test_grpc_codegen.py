"""The committed gRPC code (inference_grpc/) is what `make grpc-code` makes of the .proto files."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

import pytest

from tests.integration.server import REPO_ROOT


@pytest.fixture(scope="module")
def codegen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("grpc_codegen", REPO_ROOT / "scripts" / "grpc_codegen.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fresh(codegen: ModuleType) -> dict[str, bytes]:
    return codegen.generate()


def test_the_committed_grpc_code_matches_a_fresh_generation(codegen, fresh):
    assert codegen.differences(fresh) == [], "run `make grpc-code` and commit inference_grpc/"


def test_the_check_notices_an_edited_a_missing_and_a_stray_file(codegen, fresh, tmp_path: Path, monkeypatch):
    copy = tmp_path / "generated"
    shutil.copytree(codegen.OUT_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "grpc_service_pb2.py").write_text("# edited by hand\n")
    (copy / "model_config_pb2.pyi").unlink()
    (copy / "stray_pb2.py").write_text("")
    monkeypatch.setattr(codegen, "OUT_DIR", copy)
    assert sorted(codegen.differences(fresh)) == [
        "grpc_service_pb2.py: differs",
        "model_config_pb2.pyi: missing",
        "stray_pb2.py: not generated",
    ]


def test_the_vendored_protos_keep_their_license_header_and_source():
    for name in ("grpc_service.proto", "model_config.proto"):
        head = (REPO_ROOT / "inference_grpc" / "protos" / name).read_text()[:2000]
        assert "NVIDIA CORPORATION & AFFILIATES. All rights reserved." in head
        assert "Redistribution and use in source and binary forms" in head
    source = (REPO_ROOT / "inference_grpc" / "protos" / "SOURCE.md").read_text()
    assert "triton-inference-server/common" in source and "BSD-3-Clause" in source
