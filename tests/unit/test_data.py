import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contract.vocab import SequenceError, parse_sequence, sequence_length
from model.data import PAD_ID, SPLIT_SIZES, STRESS_SETS, VOCAB, fixed_split, generate, stress_min_pairs


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


# --- named stress sets ---


def _pairs(batch):
    return [parse_sequence(s) for s in batch.sequences()]


@pytest.mark.parametrize("stress", sorted(STRESS_SETS))
def test_every_stress_set_gives_valid_queries_with_correct_targets(stress):
    k_low = stress_min_pairs(stress)
    batch = generate(400, k_low, 12, seed=5, length=27, stress=stress)
    assert batch.tokens.shape == (400, 27) and batch.num_pairs.min() == k_low
    for parsed, target in zip(_pairs(batch), batch.targets, strict=True):
        assert parsed.answer == VOCAB.class_to_value(int(target))


def test_repeat3_odd_repeats_one_value_three_times_and_queries_a_key_with_another_value():
    for parsed in _pairs(generate(500, 4, 9, seed=2, stress="repeat3_odd")):
        values = [v for _, v in parsed.pairs]
        counts = {v: values.count(v) for v in values}
        # the repeated value appears exactly three times and is not the answer (the other values are random
        # among the remaining nine digits, so they may repeat among themselves)
        assert any(c == 3 and v != parsed.answer for v, c in counts.items()), values


def test_aabb_and_aabc_shape_the_values_and_first_last_pick_the_query():
    for parsed in _pairs(generate(300, 2, 9, seed=3, stress="aabb")):
        values = [v for _, v in parsed.pairs]
        runs = values[0::2]
        assert values[1::2] == runs[: len(values) // 2]  # a a b b ...
        assert all(a != b for a, b in itertools.pairwise(runs))
    for parsed in _pairs(generate(300, 3, 9, seed=4, stress="aabc")):
        values = [v for _, v in parsed.pairs]
        assert values[0] == values[1] and values[0] not in values[2:]
    first = _pairs(generate(100, 1, 9, seed=6, stress="first"))
    last = _pairs(generate(100, 1, 9, seed=6, stress="last"))
    assert all(p.query == p.pairs[0][0] for p in first)
    assert all(p.query == p.pairs[-1][0] for p in last)


def test_stress_sets_refuse_too_few_pairs_and_unknown_names_and_leave_random_data_alone():
    with pytest.raises(ValueError, match="at least 4"):
        generate(10, 3, 6, seed=0, stress="repeat3_odd")
    with pytest.raises(ValueError, match="unknown stress set"):
        generate(10, 4, 6, seed=0, stress="abab")
    plain = generate(50, 1, 8, seed=9)
    assert np.array_equal(plain.tokens, generate(50, 1, 8, seed=9, stress=None).tokens)
