"""One family from several checkpoints: each graph names its source; each source verifies its own buckets;
the fresh-data check answers every K through the bucket that serves it and that bucket's checkpoint."""

from __future__ import annotations

import pytest

from contract import MetadataKeys, parse_metadata, read_config_pbtxt, scan_repository
from export.__main__ import main as export_main
from export.fresh import check as fresh_check
from export.fresh import check_checkpoint
from export.fresh import main as fresh_main
from export.onnx_export import load_onnx
from export.repository import export_sources
from export.verify import ParityError, verify_repository
from model.checkpoint import file_sha256, save_checkpoint
from model.stats import rate_with_interval
from tests.unit.test_export import make_checkpoint


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    short, long = root / "short.pt", root / "long.pt"
    save_checkpoint(make_checkpoint(seed=0), short)
    save_checkpoint(make_checkpoint(seed=1), long)
    repo = root / "repo"
    export_sources([(short, [5, 7]), (long, [11])], repo)
    return root, short, long, repo


def test_each_graph_and_config_names_its_source_checkpoint_and_figures(two_sources):
    _, short, long, repo = two_sources
    expected = {5: short, 7: short, 11: long}
    entries = scan_repository(repo)
    assert sorted(e.seq_len for e in entries) == [5, 7, 11]
    for entry in entries:
        source = expected[entry.seq_len]
        props = {p.key: p.value for p in load_onnx(entry.model_path).metadata_props}
        meta = parse_metadata(props, entry.model_path)
        assert meta.source_checkpoint == source.name and meta.source_sha256 == file_sha256(source)
        assert meta.source_figures["test_error"] == 0.5 and meta.source_figures["hidden_size"] == 16
        assert MetadataKeys.SOURCE_FIGURES in props
        params = read_config_pbtxt(entry.config_path).parameters
        assert params["source_checkpoint"] == source.name
        assert params["source_sha256"] == file_sha256(source) and params["source_test_error"] == "0.5"


def test_each_source_verifies_against_its_own_buckets_only(two_sources):
    _, short, long, repo = two_sources
    assert verify_repository(short, repo, sequences=300, buckets=[5, 7]).ok
    assert verify_repository(long, repo, sequences=300, buckets=[11]).ok
    with pytest.raises(ParityError):  # the other checkpoint's weights are not in this graph
        verify_repository(long, repo, sequences=300, buckets=[5])


def test_a_bucket_named_by_two_sources_is_refused(two_sources, tmp_path):
    _, short, long, _ = two_sources
    with pytest.raises(ValueError, match="T=7 is named by two sources"):
        export_sources([(short, [5, 7]), (long, [7, 11])], tmp_path / "r")


def test_the_cli_exports_extra_sources_and_verifies_each(two_sources, tmp_path, capsys):
    _, short, long, _ = two_sources
    repo = tmp_path / "cli"
    argv = [str(short), "--buckets", "5", "--source", f"7,11={long}", "--repository", str(repo)]
    assert export_main([*argv, "--no-stream", "--verify-sequences", "200"]) == 0
    out = capsys.readouterr().out
    assert out.count("PASS") == 2
    names = {
        e.seq_len: read_config_pbtxt(e.config_path).parameters["source_checkpoint"]
        for e in scan_repository(repo)
    }
    assert names == {5: "short.pt", 7: "long.pt", 11: "long.pt"}


def test_the_fresh_check_answers_every_k_with_its_buckets_source_in_torch_and_ort(two_sources):
    root, _, _, repo = two_sources
    rows = fresh_check(repo, root, per_k=64, sets=["random", "last"])
    assert [(r.set, r.k) for r in rows] == [("random", 1), ("random", 2), ("random", 3), ("random", 4)] + [
        ("last", k) for k in (1, 2, 3, 4)
    ]
    assert {r.k: r.bucket for r in rows if r.set == "random"} == {
        1: "fastweights_t5",
        2: "fastweights_t7",
        3: "fastweights_t11",
        4: "fastweights_t11",
    }
    assert {r.source for r in rows if r.k >= 3} == {"long.pt"}
    assert all(r.disagreements == 0 and r.ort_errors == r.torch_errors for r in rows)
    assert all(r.ort_low <= r.ort_errors / r.n <= r.ort_high for r in rows)  # an untrained model errs


def test_a_checkpoint_alone_meets_the_same_fresh_sequences_as_the_repository_check(two_sources):
    root, _, long, repo = two_sources
    served = {r.k: r.torch_errors for r in fresh_check(repo, root, per_k=64, sets=["random"]) if r.k >= 3}
    alone = {
        r.k: r.ort_errors for r in check_checkpoint(long, per_k=64, sets=["random"], k_max=4) if r.k >= 3
    }
    assert alone == served  # K 3 and 4 are served from long.pt: same sequences, same answers


def test_the_fresh_check_prints_each_row_and_set_as_counts_with_an_interval(two_sources, capsys):
    _, _, long, _ = two_sources
    rows = check_checkpoint(long, per_k=32, sets=["random"], k_max=2)
    capsys.readouterr()  # what the direct call printed
    assert fresh_main(["--checkpoint", str(long), "--per-k", "32", "--k-max", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    for row in rows:  # the same sequences again: each row's count, rate and interval
        assert any(f"K={row.k} " in line and rate_with_interval(row.ort_errors, 32) in line for line in out)
    total = sum(r.ort_errors for r in rows)
    assert f"random: torch errors {rate_with_interval(total, 64)}, torch {total}, disagreements 0" in out
