import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contract.vocab import SequenceError, parse_sequence, sequence_length
from model.data import PAD_ID, SPLIT_SIZES, VOCAB, fixed_split, generate


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), k_min=st.integers(1, 12), extra=st.integers(0, 6))
def test_generated_queries_are_valid_and_targets_correct(seed, k_min, extra):
    k_max = min(26, k_min + extra)
    batch = generate(64, k_min, k_max, seed)
    assert batch.tokens.shape == (64, sequence_length(k_max))
    for seq, target, k in zip(batch.sequences(), batch.targets, batch.num_pairs, strict=True):
        parsed = parse_sequence(seq)  # raises on duplicate keys, bad grammar, query not among keys
        assert parsed.num_pairs == k
        assert k_min <= k <= k_max
        assert parsed.answer == VOCAB.class_to_value(int(target))


def test_keys_are_distinct_and_drawn_without_replacement():
    batch = generate(2000, 8, 8, seed=1)
    for seq in batch.sequences():
        keys = seq[0:16:2]
        assert len(set(keys)) == 8


def test_same_seed_gives_same_data_and_different_seed_differs():
    a, b, c = generate(500, 1, 8, 7), generate(500, 1, 8, 7), generate(500, 1, 8, 8)
    assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.targets, b.targets)
    assert not np.array_equal(a.tokens, c.tokens)


def test_variable_k_is_left_padded_with_pad_only():
    batch = generate(1000, 1, 8, seed=3)
    for row, k in zip(batch.tokens, batch.num_pairs, strict=True):
        pad = sequence_length(8) - sequence_length(int(k))
        assert (row[:pad] == PAD_ID).all()
        assert (row[pad:] != PAD_ID).all()


def test_all_k_values_in_range_appear():
    batch = generate(4000, 1, 8, seed=5)
    assert set(batch.num_pairs.tolist()) == set(range(1, 9))


def test_fixed_splits_have_paper_sizes_and_are_disjoint_streams():
    test = fixed_split("test")
    assert len(test) == SPLIT_SIZES["test"] == 20_000
    assert np.array_equal(test.tokens, fixed_split("test").tokens)
    assert not np.array_equal(fixed_split("valid", size=100).tokens, fixed_split("test", size=100).tokens)


def test_encoder_round_trips_and_pads_left():
    ids = VOCAB.encode("c9k8??c", length=11)
    assert ids[:4] == [PAD_ID] * 4
    assert VOCAB.decode(ids) == "c9k8??c"


@pytest.mark.parametrize(
    ("sequence", "code"),
    [
        ("", "empty"),
        ("c9K8??c", "unknown_character"),
        ("c9k8c", "malformed"),
        ("c9k??c", "malformed"),
        ("c9c8??c", "duplicate_key"),
        ("c9k8??z", "query_not_found"),
        ("99k8??k", "malformed"),
        ("c9k8??", "malformed"),
        ("??c", "empty"),
    ],
)
def test_invalid_sequences_raise_typed_errors(sequence, code):
    with pytest.raises(SequenceError) as info:
        parse_sequence(sequence)
    assert info.value.code == code


def test_paper_example_parses():
    parsed = parse_sequence("c9k8j3f1??c")
    assert parsed.answer == "9" and parsed.num_pairs == 4 and parsed.to_sequence() == "c9k8j3f1??c"


@settings(max_examples=400, deadline=None)
@given(
    st.text(alphabet="abcz09?K ", max_size=14)
    | st.from_regex(r"(?:[a-e][0-9]){1,5}\?\?[a-f]", fullmatch=True)
)
def test_fast_path_parses_exactly_like_the_explaining_parser(text):
    from contract.vocab import _parse_explained

    def outcome(fn):
        try:
            return fn(text, "sequence")
        except SequenceError as exc:
            return (exc.code, exc.message, exc.field, exc.position)

    assert outcome(parse_sequence) == outcome(_parse_explained)
