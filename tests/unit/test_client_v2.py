"""`--protocol v2`: bucket discovery from V2 metadata, client-side encoding, binary tensors both ways."""

from __future__ import annotations

import json
import struct

import pytest

from client.v2 import Bucket, V2Codec, V2Error, item_sequence, parse_buckets

VOCAB = ["<pad>", *"abcdefghijklmnopqrstuvwxyz", *"0123456789", "?"]
CLASSES = list("0123456789")


def metadata(seq_len: int) -> dict:
    params = {"seq_len": seq_len, "vocab": VOCAB, "pad_id": 0, "padding": "left", "answer_classes": CLASSES}
    return {"name": f"fastweights_t{seq_len}", "parameters": params}


def codec() -> V2Codec:
    index = [{"name": f"fastweights_t{t}", "version": "1", "state": "READY"} for t in (11, 5)]
    index.append({"name": "other_t7", "version": "1", "state": "READY"})
    index.append({"name": "fastweights_t19", "version": "1", "state": "UNAVAILABLE"})
    meta = {m["name"]: m for m in (metadata(5), metadata(11), metadata(19), metadata(7))}
    configs = {"fastweights_t5": {"max_batch_size": 64}}
    return V2Codec(parse_buckets("fastweights", index, meta, configs))


def test_only_the_family_s_ready_buckets_are_used_smallest_first_with_their_batch_limits():
    c = codec()
    assert [(b.name, b.seq_len, b.max_batch) for b in c.buckets] == [
        ("fastweights_t5", 5, 64),
        ("fastweights_t11", 11, 256),
    ]
    assert (
        c.buckets[0].index["a"] == 1 and c.buckets[0].index["?"] == 37 and "<pad>" not in c.buckets[0].index
    )


def test_queries_go_to_the_smallest_bucket_that_fits_left_padded():
    c = codec()
    bucket, ids, length = c.bucket_for({"sequence": "a1??a"})
    assert (bucket.seq_len, ids, length) == (5, [1, 28, 37, 37, 1], 5)
    bucket, ids, length = c.bucket_for({"pairs": [["c", "9"], ["k", "8"]], "query": "k"})
    assert (bucket.seq_len, length) == (11, 7)
    assert ids == [0, 0, 0, 0, 3, 36, 11, 35, 37, 37, 11]


@pytest.mark.parametrize(
    ("item", "code"),
    [
        ({"sequence": "a1??A"}, "unknown_character"),
        ({"sequence": ""}, "empty"),
        ({"sequence": "a1b2c3d4e5??a"}, "too_long"),
        ({"sequence": "a1??a", "top": 1}, "invalid_request"),
        ({"sequence": 5}, "invalid_request"),
        ({"pairs": [["a"]], "query": "a"}, "invalid_request"),
        ({"query": "a"}, "invalid_request"),
    ],
)
def test_what_v2_can_check_becomes_a_row_error(item, code):
    assert codec().bucket_for(item)["error"]["code"] == code


def test_the_grammar_is_not_checked_over_v2():
    assert item_sequence({"sequence": "c9c8??c"}) == "c9c8??c"
    assert not isinstance(codec().bucket_for({"sequence": "c9c8??c"}), dict)


def test_a_request_is_a_json_header_then_little_endian_int64_tokens():
    body, headers = V2Codec.request([[0, 1, 28, 37, 1], [2, 3, 4, 5, 6]], 5)
    n = int(headers["Inference-Header-Content-Length"])
    header = json.loads(body[:n])
    assert header["inputs"][0]["shape"] == [2, 5] and header["inputs"][0]["datatype"] == "INT64"
    assert header["inputs"][0]["parameters"]["binary_data_size"] == 80
    assert header["outputs"] == [{"name": "logits", "parameters": {"binary_data": True}}]
    assert struct.unpack("<10q", body[n:]) == (0, 1, 28, 37, 1, 2, 3, 4, 5, 6)


def test_logits_are_read_from_binary_or_json_responses_after_other_outputs():
    logits = [0.0] * 10 + [5.0] + [0.0] * 9
    attention = struct.pack("<4f", 1, 2, 3, 4)
    header = json.dumps(
        {
            "outputs": [
                {"name": "memory_attention", "parameters": {"binary_data_size": len(attention)}},
                {"name": "logits", "parameters": {"binary_data_size": 80}},
            ]
        }
    ).encode()
    content = header + attention + struct.pack("<20f", *logits)
    assert V2Codec.logits(content, str(len(header)), 2, 10) == logits
    as_json = json.dumps({"outputs": [{"name": "logits", "data": logits}]}).encode()
    assert V2Codec.logits(as_json, None, 2, 10) == logits
    with pytest.raises(V2Error):
        V2Codec.logits(as_json, None, 3, 10)


def test_answers_are_the_argmax_with_its_softmax_probability():
    bucket = Bucket("fastweights_t5", 5, {}, 0, tuple(CLASSES), 256)
    flat = [0.0] * 10 + [0.0] * 3 + [2.0] + [0.0] * 6
    answers = V2Codec.answers(flat, bucket, [5, 9])
    assert answers[0] == {"value": "0", "confidence": 0.1, "num_pairs": 1}
    assert answers[1]["value"] == "3" and answers[1]["num_pairs"] == 3
    assert answers[1]["confidence"] == pytest.approx(7.389056 / (7.389056 + 9), abs=1e-6)


def test_a_server_without_the_family_is_an_error():
    with pytest.raises(V2Error, match="no READY"):
        parse_buckets("fastweights", [{"name": "x_t5"}], {}, {})
    bad = {"fastweights_t5": {"parameters": {"seq_len": 5}}}
    with pytest.raises(V2Error, match="encoding needs"):
        parse_buckets("fastweights", [{"name": "fastweights_t5"}], bad, {})
