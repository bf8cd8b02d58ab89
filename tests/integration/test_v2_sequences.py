"""The stateful model over V2 with the STOCK tritonclient.http and Triton's sequence parameters
(`client.infer(model, inputs, sequence_id=..., sequence_start=..., sequence_end=...)`)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from contract import scan_repository
from contract.vocab import DEFAULT_TOKENS, sequence_length
from model.data import generate
from tests.integration.server import Server, default_repository

STREAM = "fastweights_stream"
INDEX = {t: i for i, t in enumerate(DEFAULT_TOKENS)}
BUCKETS = sorted(e.seq_len for e in scan_repository(default_repository()) if not e.config.stateful)
K_MAX = (BUCKETS[-1] - 3) // 2  # the served capacity: 26 pairs (T = 55)


@pytest.fixture(scope="module")
def tc(server: Server) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    yield client
    client.close()


def chunk(text: str) -> list[httpclient.InferInput]:
    ids = np.zeros((1, 3), dtype=np.int64)  # left padded with PAD (id 0)
    ids[0, 3 - len(text) :] = [INDEX[c] for c in text]
    inp = httpclient.InferInput("tokens", [1, 3], "INT64")
    inp.set_data_from_numpy(ids)
    return [inp]


def stateless_logits(tc: httpclient.InferenceServerClient, text: str) -> np.ndarray:
    T = min(t for t in BUCKETS if t >= len(text))
    ids = np.zeros((1, T), dtype=np.int64)
    ids[0, T - len(text) :] = [INDEX[c] for c in text]
    inp = httpclient.InferInput("tokens", [1, T], "INT64")
    inp.set_data_from_numpy(ids)
    return tc.infer(f"fastweights_t{T}", [inp]).as_numpy("logits")


def test_a_sequence_answers_every_query_as_the_stateless_graphs_do(
    tc: httpclient.InferenceServerClient,
) -> None:
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"fresh data seed {seed}")
    data = generate(52, 1, K_MAX, seed)
    for n, (row, k) in enumerate(zip(data.tokens, data.num_pairs, strict=True)):
        text = "".join(DEFAULT_TOKENS[t] for t in row[len(row) - sequence_length(int(k)) :])
        pairs = text[: 2 * k]
        sid = n + 1 if n % 2 else f"conversation-{seed}-{n}"  # int and string ids
        for i in range(0, len(pairs), 2):
            tc.infer(STREAM, chunk(pairs[i : i + 2]), sequence_id=sid, sequence_start=i == 0)
        for key in pairs[::2]:
            got = tc.infer(STREAM, chunk("??" + key), sequence_id=sid)
            want = stateless_logits(tc, pairs + "??" + key)
            logits = got.as_numpy("logits")
            assert np.abs(logits - want).max() <= 1e-4 and logits.argmax() == want.argmax()
            assert got.as_numpy("memory_attention").shape == (1, BUCKETS[-1])
        tc.infer(STREAM, chunk("??" + pairs[0]), sequence_id=sid, sequence_end=True)
        with pytest.raises(InferenceServerException, match="not started"):
            tc.infer(STREAM, chunk("??" + pairs[0]), sequence_id=sid)


def test_a_query_does_not_change_the_sequence_and_a_start_resets_it(
    tc: httpclient.InferenceServerClient,
) -> None:
    tc.infer(STREAM, chunk("a1"), sequence_id=777, sequence_start=True)
    tc.infer(STREAM, chunk("b2"), sequence_id=777)
    first = tc.infer(STREAM, chunk("??a"), sequence_id=777).as_numpy("logits")
    for _ in range(3):
        assert np.array_equal(tc.infer(STREAM, chunk("??a"), sequence_id=777).as_numpy("logits"), first)
    tc.infer(STREAM, chunk("c3"), sequence_id=777)
    after = tc.infer(STREAM, chunk("??c"), sequence_id=777).as_numpy("logits")
    assert np.abs(after - stateless_logits(tc, "a1b2c3??c")).max() <= 1e-4
    tc.infer(STREAM, chunk("d4"), sequence_id=777, sequence_start=True)  # a new sequence under the same id
    again = tc.infer(STREAM, chunk("??d"), sequence_id=777).as_numpy("logits")
    assert np.abs(again - stateless_logits(tc, "d4??d")).max() <= 1e-4


def test_sequence_errors_are_400s_that_say_what_is_wrong(tc: httpclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException, match="sequence_id"):
        tc.infer(STREAM, chunk("a1"))  # no sequence id at all
    with pytest.raises(InferenceServerException, match="not started"):
        tc.infer(STREAM, chunk("a1"), sequence_id="never-started")
    tc.infer(STREAM, chunk("a1"), sequence_id=99, sequence_start=True)
    two = np.zeros((2, 3), dtype=np.int64)
    inp = httpclient.InferInput("tokens", [2, 3], "INT64")
    inp.set_data_from_numpy(two)
    with pytest.raises(InferenceServerException, match="one row per request"):
        tc.infer(STREAM, [inp], sequence_id=99)
    letters = "bcdefghijklmnopqrstuvwxyz"
    for i in range(K_MAX - 1):  # 26 pairs in all: the served capacity
        tc.infer(STREAM, chunk(letters[i] + "1"), sequence_id=99)
    with pytest.raises(InferenceServerException, match="at most 52"):  # a 27th pair
        tc.infer(STREAM, chunk("b2"), sequence_id=99)
    assert tc.infer(STREAM, chunk("??z"), sequence_id=99).as_numpy("logits").argmax() == 1  # class "1"


def test_the_stateful_model_is_described_by_v2_metadata(tc: httpclient.InferenceServerClient) -> None:
    meta = tc.get_model_metadata(STREAM)
    assert [i["name"] for i in meta["inputs"]] == ["tokens"] and meta["inputs"][0]["shape"] == [-1, 3]
    assert {o["name"] for o in meta["outputs"]} == {"logits", "memory_attention"}
    assert tc.is_model_ready(STREAM)


def test_the_stateful_model_config_declares_sequence_batching_and_its_capacity(
    tc: httpclient.InferenceServerClient,
) -> None:
    config = tc.get_model_config(STREAM)
    states = {s["input_name"]: s for s in config["sequence_batching"]["state"]}
    assert states["state_memory"]["dims"] == [54, 50] and states["state_h"]["output_name"] == "state_h_out"
    params = tc.get_model_metadata(STREAM)["parameters"]
    assert (params["stateful"], params["max_pairs"], params["seq_len"]) == (True, 26, 3)
