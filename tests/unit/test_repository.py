"""The model repository: Triton layout, config.pbtxt that matches each graph, torch-free reading, and the
committed default model (it must answer the task and honour the contract without any side file)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from contract import (
    CONFIG_FILENAME,
    DEFAULT_BUCKETS,
    INPUT_TOKENS,
    LOOP_OPS,
    OUTPUT_ATTENTION,
    OUTPUT_LOGITS,
    PLATFORM,
    ContractError,
    VersionPolicy,
    check_io,
    config_from_text,
    is_version_name,
    parse_metadata,
    parse_pbtxt,
    read_config_pbtxt,
    render_config_pbtxt,
    scan_models,
    scan_repository,
    smallest_bucket,
)
from contract.model_config import write_config_pbtxt
from contract.vocab import Vocabulary, max_pairs_for_length
from export.onnx_export import all_nodes, graph_io, load_onnx
from export.repository import export_repository, rewrite_bucket_configs
from model.checkpoint import Checkpoint, build_model
from model.config import ModelConfig
from model.data import fixed_split

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "model_repository"


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    cfg = ModelConfig(hidden_size=8, embed_size=8, head_size=8)
    ckpt = Checkpoint(config=cfg, state_dict=build_model(cfg).state_dict())
    root = tmp_path_factory.mktemp("repo")
    export_repository(ckpt, root, buckets=(5, 9), family="tiny", max_batch_size=64)
    return root


def test_repository_has_the_triton_layout(tiny_repo):
    assert sorted(str(p.relative_to(tiny_repo)) for p in tiny_repo.rglob("*") if p.is_file()) == [
        "tiny_t5/1/model.onnx",
        "tiny_t5/config.pbtxt",
        "tiny_t9/1/model.onnx",
        "tiny_t9/config.pbtxt",
    ]
    entries = scan_repository(tiny_repo)
    assert [(e.name, e.family, e.seq_len, e.version) for e in entries] == [
        ("tiny_t5", "tiny", 5, 1),
        ("tiny_t9", "tiny", 9, 1),
    ]


def test_config_parsed_back_matches_the_onnx_graph(tiny_repo):
    for entry in scan_repository(tiny_repo):
        cfg = read_config_pbtxt(entry.config_path)
        assert cfg.platform == PLATFORM == "onnxruntime_onnx"
        assert cfg.max_batch_size == 64 and cfg.preferred_batch_sizes == ()
        assert cfg.max_queue_delay_us is None  # left out: the server's default (no delay) applies
        proto = onnx.load(str(entry.model_path))
        inputs, outputs = graph_io(proto)
        assert list(cfg.inputs) == inputs and list(cfg.outputs) == outputs
        meta = parse_metadata({p.key: p.value for p in proto.metadata_props}, entry.model_path)
        assert (meta.family, meta.seq_len) == (cfg.family, cfg.seq_len)
        check_io(cfg.inputs, cfg.outputs, meta.seq_len, meta.num_classes, entry.config_path)


def test_config_dims_leave_out_the_batch_axis_as_triton_expects(tiny_repo):
    raw = parse_pbtxt((tiny_repo / "tiny_t9" / CONFIG_FILENAME).read_text())
    assert raw["input"] == [{"name": "tokens", "data_type": "TYPE_INT64", "dims": [9]}]
    assert {o["name"]: o["dims"] for o in raw["output"]} == {"logits": [10], "memory_attention": [9]}
    assert raw["dynamic_batching"] == {}  # Triton's dynamic batcher on, with the server's defaults


def test_the_config_carries_what_a_client_needs_to_encode_queries(tiny_repo):
    """vocab, PAD id and answer classes in `parameters`: readable by get_model_config from any V2 server."""
    cfg = read_config_pbtxt(tiny_repo / "tiny_t9" / CONFIG_FILENAME)
    graph = onnx.load(str(tiny_repo / "tiny_t9" / "1" / "model.onnx"))
    meta = parse_metadata({p.key: p.value for p in graph.metadata_props}, "tiny_t9")
    assert json.loads(cfg.parameters["vocab"]) == list(meta.vocab)
    assert int(cfg.parameters["pad_id"]) == meta.pad_id and cfg.parameters["padding"] == "left"
    assert json.loads(cfg.parameters["answer_classes"]) == list(meta.answer_classes)


def test_every_config_field_the_service_obeys_round_trips_through_the_writer(tiny_repo):
    cfg = read_config_pbtxt(tiny_repo / "tiny_t9" / CONFIG_FILENAME)
    for policy in (
        VersionPolicy("all"),
        VersionPolicy("latest", 3),
        VersionPolicy("specific", versions=(1, 4)),
    ):
        changed = dataclasses.replace(
            cfg,
            max_batch_size=8,
            preferred_batch_sizes=(2, 8),
            max_queue_delay_us=1500,
            max_queue_size=32,
            default_timeout_us=2_000_000,
            instance_count=3,
            instance_kind="KIND_CPU",
            version_policy=policy,
        )
        assert config_from_text(write_config_pbtxt(changed), "x") == changed


def test_the_committed_configs_are_what_the_exporter_writes_from_the_graphs(tmp_path):
    """model_repository/*/config.pbtxt are reproducible: `python -m export.configs` rewrites them alike."""
    shutil.copytree(COMMITTED, tmp_path / "repo")
    written = rewrite_bucket_configs(tmp_path / "repo")
    assert len(written) == len(DEFAULT_BUCKETS)
    for path in written:
        assert path.read_text() == (COMMITTED / path.parent.name / CONFIG_FILENAME).read_text(), path


def test_pbtxt_reader_accepts_hand_written_triton_configs(tmp_path):
    text = """
    # written by hand, Triton style
    name: "other_t11"
    platform: "onnxruntime_onnx"
    max_batch_size: 8
    input [ { name: "tokens", data_type: TYPE_INT64, dims: [ 11 ] } ]
    output { name: "logits" data_type: TYPE_FP32 dims: [ 10 ] }
    output { name: "memory_attention" data_type: TYPE_FP32 dims: [ 11 ] }
    instance_group [ { count: 2, kind: KIND_CPU } ]
    dynamic_batching { }
    """
    path = tmp_path / CONFIG_FILENAME
    path.write_text(text)
    cfg = read_config_pbtxt(path)
    assert (cfg.name, cfg.family, cfg.seq_len, cfg.max_batch_size) == ("other_t11", "other", 11, 8)
    assert [o.name for o in cfg.outputs] == ["logits", "memory_attention"]
    check_io(cfg.inputs, cfg.outputs, 11, 10, path)


def test_rendered_config_round_trips():
    text = render_config_pbtxt("fam", 19, 10, max_batch_size=128, preferred_batch_sizes=(1, 512, 32))
    raw = parse_pbtxt(text)
    assert raw["name"] == "fam_t19" and raw["max_batch_size"] == 128
    assert raw["dynamic_batching"]["preferred_batch_size"] == [1, 32]  # 512 > max_batch_size is dropped
    assert {p["key"]: p["value"]["string_value"] for p in raw["parameters"]} == {
        "family": "fam",
        "seq_len": "19",
    }


@pytest.mark.parametrize("text", ['name: "x', "name: {", "input [ { name: } ]", "} name"])
def test_malformed_config_is_a_contract_error_naming_the_file(text, tmp_path):
    path = tmp_path / CONFIG_FILENAME
    path.write_text(text)
    with pytest.raises(ContractError, match=str(path)):
        read_config_pbtxt(path)


def test_reexport_with_fewer_buckets_removes_stale_ones_of_that_family_only(tmp_path):
    cfg = ModelConfig(hidden_size=8, embed_size=8, head_size=8)
    ckpt = Checkpoint(config=cfg, state_dict=build_model(cfg).state_dict())
    export_repository(ckpt, tmp_path, buckets=(5, 7), family="a")
    export_repository(ckpt, tmp_path, buckets=(5,), family="b")
    (tmp_path / "a_tnotes").mkdir()  # not a model of family a: must survive
    export_repository(ckpt, tmp_path, buckets=(7,), family="a")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_t7", "a_tnotes", "b_t5"]


def _broken_copy(tiny_repo: Path, tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(tiny_repo, root)
    return root


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda r: (r / "tiny_t5" / CONFIG_FILENAME).unlink(), r"tiny_t5: model folder has no config\.pbtxt"),
        (lambda r: shutil.rmtree(r / "tiny_t5" / "1"), r"tiny_t5: model folder has no numeric version"),
        (
            lambda r: (r / "tiny_t5" / "1" / "model.onnx").unlink(),
            r"tiny_t5/1/model\.onnx: missing model file",
        ),
        (lambda r: (r / "tiny_t5").rename(r / "renamed"), r"config name 'tiny_t5' differs from its folder"),
        (lambda r: [shutil.rmtree(p) for p in r.iterdir()], r"repo: model repository holds no models"),
        (lambda r: shutil.rmtree(r), r"repo: model repository is not a directory"),
    ],
    ids=["no-config", "no-version", "no-model", "renamed", "empty", "missing"],
)
def test_a_broken_repository_is_a_contract_error_naming_the_path(breakage, message, tiny_repo, tmp_path):
    root = _broken_copy(tiny_repo, tmp_path)
    breakage(root)
    with pytest.raises(ContractError, match=message):
        scan_repository(root)


def test_smallest_fitting_bucket_is_chosen(tiny_repo):
    entries = scan_repository(tiny_repo)
    assert smallest_bucket(entries, "tiny", 3).seq_len == 5
    assert smallest_bucket(entries, "tiny", 5).seq_len == 5
    assert smallest_bucket(entries, "tiny", 6).seq_len == 9
    assert smallest_bucket(entries, "tiny", 10) is None
    assert smallest_bucket(entries, "other", 5) is None


# --- the committed default model ---


def test_committed_repository_holds_every_default_bucket():
    entries = scan_repository(COMMITTED)
    buckets = [(e.family, e.seq_len) for e in entries if e.family == "fastweights"]
    assert buckets == [("fastweights", t) for t in DEFAULT_BUCKETS]
    # and beside them only the family's stateful model (memory sessions, tests/unit/test_state_graph.py)
    assert [e.name for e in entries if e.family != "fastweights"] == ["fastweights_stream"]


@pytest.mark.parametrize("seq_len", DEFAULT_BUCKETS)
def test_committed_graph_is_self_describing_unrolled_and_matches_its_config(seq_len):
    entry = next(e for e in scan_repository(COMMITTED) if e.seq_len == seq_len)
    proto = load_onnx(entry.model_path)
    assert not {n.op_type for n in all_nodes(proto.graph)} & LOOP_OPS  # If branches included
    onnx.checker.check_model(proto, full_check=True)
    meta = parse_metadata({p.key: p.value for p in proto.metadata_props}, entry.model_path)
    assert meta.kind == "fast" and meta.seq_len == seq_len and meta.family == "fastweights"
    assert meta.model_config["hidden_size"] == 50 and len(meta.source_sha256) == 64
    assert meta.exporter.startswith("export.builder") and meta.opset == 17  # fast weights: built, not traced
    assert Vocabulary(meta.vocab, meta.pad_token).pad_id == 0 == meta.pad_id
    inputs, outputs = graph_io(proto)
    assert list(entry.config.inputs) == inputs and list(entry.config.outputs) == outputs


@pytest.mark.parametrize("seq_len", DEFAULT_BUCKETS)
def test_committed_model_answers_the_task_in_onnxruntime_alone(seq_len):
    """No torch: tokens from the generator, answers from the graph, the retrieved pair from the attention."""
    entry = next(e for e in scan_repository(COMMITTED) if e.seq_len == seq_len)
    session = ort.InferenceSession(str(entry.model_path), providers=["CPUExecutionProvider"])
    k_max = max_pairs_for_length(seq_len)
    data = fixed_split("test", 1, k_max, size=2000, length=seq_len)
    logits, attention = session.run([OUTPUT_LOGITS, OUTPUT_ATTENTION], {INPUT_TOKENS: data.tokens})
    accuracy = float((logits.argmax(-1) == data.targets).mean())
    assert accuracy >= 0.995, accuracy  # the served checkpoint (k26.pt) is trained on every K served, 1..26
    # the fast memory's strongest weight sits on the queried pair (its key or its value)
    key_pos = np.array([np.flatnonzero(row[:-3] == row[-1])[0] for row in data.tokens])
    on_pair = np.isin(attention.argmax(-1) - key_pos, (0, 1))
    assert on_pair.mean() >= 0.9
    assert attention.shape == data.tokens.shape and (attention[:, -1] == 0).all()
    assert (attention[data.tokens == 0] == 0).all()  # PAD positions hold nothing


def test_committed_repository_is_the_export_of_the_committed_checkpoint():
    """model_repository/ and checkpoints/k26.pt (default.pt fine-tuned to K = 26) travel together: same
    hash, same function, every bucket and the stream model of sessions (one source: docs/results.md s. 4)."""
    from export.verify import verify_repository
    from model.checkpoint import file_sha256

    checkpoint = ROOT / "checkpoints" / "k26.pt"
    sha = file_sha256(checkpoint)
    for entry in scan_repository(COMMITTED):
        meta = parse_metadata(
            {p.key: p.value for p in load_onnx(entry.model_path).metadata_props}, entry.model_path
        )
        assert meta.source_sha256 == sha, (
            f"{entry.model_path} was exported from another checkpoint: make model"
        )
    report = verify_repository(checkpoint, COMMITTED, sequences=1000, batch_sizes=(1, 7, 256))
    assert report.ok and report.source_matches


@pytest.mark.parametrize("name", ["0", "1", "2", "10", "123456789012345678"])
def test_version_folders_are_ascii_digit_numbers(name):
    assert is_version_name(name)


@pytest.mark.parametrize("name", ["²", "٣", "１", "01", "v1", "1.0", "-1", "", " 1", "1234567890123456789"])
def test_anything_else_is_not_a_version_folder(name):
    assert not is_version_name(name)


def test_str_isdigit_would_take_a_superscript_two_for_a_version():
    """Why the rule is a regex: `isdigit` says yes to '²', and `int('²')` then raises."""
    assert "²".isdigit() and not is_version_name("²")
    with pytest.raises(ValueError):
        int("²")


def test_a_model_folder_lists_what_it_ignores_and_why(tiny_repo, tmp_path):
    root = _broken_copy(tiny_repo, tmp_path)
    for odd in ("²", "v2", "01"):
        (root / "tiny_t5" / odd).mkdir()
    shutil.copytree(root / "tiny_t5" / "1", root / "tiny_t5" / "3")
    (folder,) = [f for f in scan_models(root) if f.name == "tiny_t5"]
    assert folder.versions == (1, 3) and folder.problem == ""
    assert sorted(i.name for i in folder.ignored) == ["01", "v2", "²"]
    assert all("ASCII digits" in i.reason for i in folder.ignored)
    assert [e.version for e in scan_repository(root) if e.name == "tiny_t5"] == [3]


def test_a_model_folder_with_a_bad_config_reports_the_problem_without_raising(tiny_repo, tmp_path):
    root = _broken_copy(tiny_repo, tmp_path)
    (root / "tiny_t5" / CONFIG_FILENAME).write_text('name: "tiny_t5"\nplatform: "tensorflow"\n')
    (root / "tiny_t9" / CONFIG_FILENAME).unlink()
    folders = {f.name: f for f in scan_models(root)}
    assert folders["tiny_t5"].problem.startswith("config.pbtxt: config lacks")
    assert folders["tiny_t9"].problem == "model folder has no config.pbtxt"
    assert str(root) not in folders["tiny_t5"].problem
