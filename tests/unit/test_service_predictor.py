"""The predictor without HTTP: the bundled repository, provider choice, encoding, decoding, load errors."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest

from contract import scan_models
from contract.vocab import SequenceError, parse_sequence
from model.data import VOCAB, generate
from service import predictor
from service.predictor import SMALL_BATCH, ModelLoadError, decode, load_model, softmax
from service.retrieval import pick_bucket

REPO = Path(__file__).resolve().parents[2] / "model_repository"
T11 = REPO / "fastweights_t11" / "1" / "model.onnx"


@pytest.fixture(scope="module")
def t11() -> predictor.LoadedModel:
    return load_model(T11, "fastweights_t11", "1", device="cpu")


def test_the_bundled_repository_has_the_ten_length_buckets_each_with_a_numeric_version() -> None:
    folders = scan_models(REPO)
    buckets = sorted(f"fastweights_t{t}" for t in (5, 11, 19, 25, 31, 37, 41, 47, 51, 55))
    assert [f.name for f in folders] == ["fastweights_stream", *buckets]  # and the stateful model of sessions
    assert all(f.versions == (1,) and not f.problem and not f.ignored for f in folders)


def test_a_loaded_model_describes_itself_from_its_own_metadata(t11: predictor.LoadedModel) -> None:
    info = t11.info
    assert (info.name, info.version, info.family, info.seq_len) == ("fastweights_t11", "1", "fastweights", 11)
    assert info.vocab_tokens == VOCAB.tokens and info.pad_id == VOCAB.pad_id
    assert info.answer_classes == tuple("0123456789")
    assert info.model_config["hidden_size"] == 50
    assert [s.name for s in info.inputs] == ["tokens"]
    assert [s.name for s in info.outputs] == ["logits", "memory_attention"]
    assert info.providers == ("CPUExecutionProvider",)  # what the session really uses
    assert info.max_pairs == 4


def test_encoding_left_pads_to_the_bucket_length(t11: predictor.LoadedModel) -> None:
    tokens = t11.encode([parse_sequence("a1??a"), parse_sequence("c9k8j3f1??c")])
    assert tokens.shape == (2, 11) and tokens.dtype == np.int64
    assert tokens[0, :6].tolist() == [VOCAB.pad_id] * 6
    assert VOCAB.decode(tokens[0]) == "a1??a" and VOCAB.decode(tokens[1]) == "c9k8j3f1??c"


def test_the_byte_table_encoding_equals_the_token_by_token_one() -> None:
    """`encode`'s one-translate path gives what `Vocabulary.encode` gives, row by row, left padded."""
    batch = generate(300, 1, 8, seed=7, length=19)
    queries = [parse_sequence(VOCAB.decode(row)) for row in batch.tokens]
    tokens = predictor.encode(queries, VOCAB, 19)
    assert tokens.shape == (300, 19) and tokens.dtype == np.int64
    for row, q in zip(tokens, queries, strict=True):
        text = q.to_sequence()
        assert row.tolist() == [VOCAB.pad_id] * (19 - len(text)) + VOCAB.encode(text)
    assert predictor.encode(queries[:1], VOCAB, 19).tolist() == tokens[:1].tolist()


def test_encoding_refuses_what_the_vocabulary_refuses_and_what_does_not_fit() -> None:
    query = parse_sequence("a1??a")
    with pytest.raises(ValueError, match="does not fit"):
        predictor.encode([query], VOCAB, 4)
    for text in ("a1??\u00e9", "a1?\0a", "a1??A"):  # not ASCII; NUL (would pass for padding); not a token
        odd = dataclasses.replace(query, text=text)
        with pytest.raises(SequenceError):
            predictor.encode([odd], VOCAB, 11)


def test_the_bundled_model_answers_fresh_sequences_correctly(t11: predictor.LoadedModel) -> None:
    batch = generate(1000, 1, 4, seed=20261128, length=11)
    out = t11.run(batch.tokens)
    accuracy = float((out["logits"].argmax(1) == batch.targets).mean())
    assert accuracy >= 0.995, accuracy


def test_decode_gives_top_k_probabilities_and_an_attention_explanation_that_sums_to_one(
    t11: predictor.LoadedModel,
) -> None:
    queries = [parse_sequence("c9k8j3f1??c"), parse_sequence("a1??a")]
    out = t11.run(t11.encode(queries))
    preds = decode(
        queries, out["logits"], out["memory_attention"], t11.info.answer_classes, top_k=3, explain=True
    )
    assert [p.value for p in preds] == ["9", "1"]
    first = preds[0]
    assert len(first.top_k) == 3 and first.top_k[0] == (first.value, first.confidence)
    probs = [p for _, p in first.top_k]
    assert probs == sorted(probs, reverse=True)
    weights = [w for *_, w in first.explanation]
    assert sorted((k, v, pos) for k, v, pos, _ in first.explanation) == [
        ("c", "9", 0),
        ("f", "1", 6),
        ("j", "3", 4),
        ("k", "8", 2),
    ]
    assert sum(weights) == pytest.approx(1.0) and weights == sorted(weights, reverse=True)
    assert preds[1].explanation == [("a", "1", 0, pytest.approx(1.0))]


def test_softmax_is_stable_for_large_logits() -> None:
    p = softmax(np.array([[1000.0, 0.0], [0.0, 0.0]]))
    assert np.allclose(p, [[1.0, 0.0], [0.5, 0.5]])


def test_a_missing_file_is_a_load_error_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"no model\.onnx"):
        load_model(tmp_path / "model.onnx", "m", "1")


def test_a_corrupt_file_is_a_load_error_not_a_crash(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"this is not an onnx graph")
    with pytest.raises(ModelLoadError, match="could not load"):
        load_model(bad, "m", "1")


def test_a_graph_without_our_metadata_is_refused(tmp_path: Path) -> None:
    graph = onnx.load(str(T11))
    del graph.metadata_props[:]
    path = tmp_path / "model.onnx"
    onnx.save(graph, str(path))
    with pytest.raises(ModelLoadError, match="metadata_props lack required keys"):
        load_model(path, "m", "1")


def test_a_graph_whose_metadata_disagrees_with_its_shape_is_refused(tmp_path: Path) -> None:
    graph = onnx.load(str(T11))
    for prop in graph.metadata_props:
        if prop.key == "fastweights.seq_len":
            prop.value = "19"
    path = tmp_path / "model.onnx"
    onnx.save(graph, str(path))
    with pytest.raises(
        ModelLoadError, match=r"input 'tokens' has shape \[.*, 11\], the contract expects \['batch', 19\]"
    ):
        load_model(path, "m", "1")


def test_run_rejects_tokens_of_the_wrong_length(t11: predictor.LoadedModel) -> None:
    with pytest.raises(ValueError, match=r"shape \(B, 11\)"):
        t11.run(np.zeros((1, 5), dtype=np.int64))


def test_copying_a_model_directory_gives_a_loadable_model(tmp_path: Path) -> None:
    shutil.copytree(REPO / "fastweights_t5", tmp_path / "fastweights_t5")
    m = load_model(tmp_path / "fastweights_t5" / "1" / "model.onnx", "fastweights_t5", "1")
    assert m.info.seq_len == 5


@pytest.mark.parametrize("top_k", [1, 3, 10])
def test_small_and_large_batches_are_ranked_alike(top_k: int) -> None:
    """`decode` ranks a few rows in plain Python and a batch with numpy: same values, same rounded chances."""
    rng = np.random.default_rng(11)
    logits = (rng.normal(size=(64, 10)) * rng.uniform(0.1, 20, size=(64, 1))).astype(np.float32)
    logits[0] = 3.0  # a full tie: the first class wins in both
    logits[1, [2, 7]] = 50.0  # a tie at the top between two classes
    queries = [parse_sequence("a1??a")] * 64
    attention = np.zeros((64, 5), dtype=np.float32)
    classes = [str(d) for d in range(10)]
    batch = decode(queries, logits, attention, classes, top_k=top_k)
    assert len(batch) == 64 and SMALL_BATCH < 64
    for row in range(64):
        (alone,) = decode(queries[:1], logits[row : row + 1], attention[:1], classes, top_k=top_k)
        assert [v for v, _ in alone.top_k] == [v for v, _ in batch[row].top_k], row
        for (_, p_alone), (_, p_batch) in zip(alone.top_k, batch[row].top_k, strict=True):
            assert p_alone == pytest.approx(p_batch, abs=1.01e-6)
    assert batch[0].value == "0" and batch[1].value == "2"


def test_runs_go_through_the_cpp_binding_and_fall_back_to_the_public_api(
    t11: predictor.LoadedModel,
) -> None:
    tokens = t11.encode([parse_sequence("c9k8j3f1??c"), parse_sequence("a1??a")])
    expected = t11.session.run(None, {"tokens": tokens})
    assert t11._binding is t11.session._sess  # onnxruntime's binding is found and used

    def same(out: dict[str, np.ndarray]) -> bool:
        return np.array_equal(out["logits"], expected[0]) and np.array_equal(
            out["memory_attention"], expected[1]
        )

    assert same(t11.run(tokens))

    class Recording:  # the binding, recording the run options it is given
        def __init__(self, inner: object) -> None:
            self.inner, self.options = inner, []

        def run(self, names: object, feed: object, options: object) -> object:
            self.options.append(options)
            return self.inner.run(names, feed, options)  # type: ignore[attr-defined]

    recorded = dataclasses.replace(t11)
    recorded._binding = Recording(t11._binding)
    assert same(recorded.run(tokens)) and same(recorded.run(tokens))
    first, second = recorded._binding.options
    # one RunOptions made once, never None (from None pybind11 builds and drops an AttributeError per run)
    assert isinstance(first, onnxruntime.RunOptions) and second is first

    class Failing:
        calls = 0

        def run(self, *args: object) -> None:
            Failing.calls += 1
            raise RuntimeError("binding changed")

    class WithoutBinding:  # a session object of some onnxruntime without `_sess`
        def __init__(self, session: object) -> None:
            self.run = session.run  # type: ignore[attr-defined]

    failing = dataclasses.replace(t11)
    failing._binding = Failing()
    assert same(failing.run(tokens)) and Failing.calls == 1
    bare = dataclasses.replace(t11, session=WithoutBinding(t11.session))  # type: ignore[arg-type]
    assert bare._binding is None and same(bare.run(tokens))


def test_a_query_longer_than_every_ready_bucket_is_too_long_naming_the_most_pairs_served() -> None:
    """The repository's largest bucket holds 26 pairs, so no valid query reaches this branch through the API;
    a family served with fewer buckets (here T = 5 and 11: at most 4 pairs) must still refuse it."""
    t5 = load_model(REPO / "fastweights_t5" / "1" / "model.onnx", "fastweights_t5", "1", device="cpu")
    t11 = load_model(T11, "fastweights_t11", "1", device="cpu")
    assert pick_bucket((t5, t11), parse_sequence("a1b2c3d4??a"), "sequence") is t11
    with pytest.raises(SequenceError) as err:
        pick_bucket((t5, t11), parse_sequence("a1b2c3d4e5??a"), "sequences[3]")
    assert (err.value.code, err.value.field) == ("too_long", "sequences[3]")
    assert "5 pairs is more than the largest bucket holds (4 pairs)" in str(err.value)
