"""A model's config.pbtxt over the server's FWS_ defaults: what the service really runs with."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from contract import VersionPolicy, read_config_pbtxt
from service.config import Settings
from service.serving_config import serving_config

T11 = Path(__file__).resolve().parents[2] / "model_repository" / "fastweights_t11" / "config.pbtxt"


def test_fields_the_config_leaves_out_take_the_server_defaults() -> None:
    settings = Settings(max_queue_delay_ms=2.5, max_queue_rows=77, request_timeout_s=3.0)
    config = serving_config(read_config_pbtxt(T11), settings)
    assert config.max_batch_size == 256  # the bundled config sets it
    assert (config.max_queue_delay_s, config.max_queue_rows, config.default_timeout_s) == (0.0025, 77, 3.0)
    assert config.instances == 1 and config.version_policy == VersionPolicy()
    assert config.from_config == {"max_batch_size"}


def test_fields_the_config_sets_win_over_the_server_settings(caplog) -> None:
    bucket = dataclasses.replace(
        read_config_pbtxt(T11),
        max_batch_size=16,
        preferred_batch_sizes=(8, 16),
        max_queue_delay_us=250,
        max_queue_size=40,
        default_timeout_us=1_500_000,
        instance_count=3,
        version_policy=VersionPolicy("all"),
    )
    settings = Settings(max_batch_size=64, max_queue_delay_ms=9.0, max_queue_rows=4096, request_timeout_s=10)
    config = serving_config(bucket, settings)
    assert (config.max_batch_size, config.preferred_batch_sizes) == (16, (8, 16))
    assert (config.max_queue_delay_s, config.max_queue_rows, config.default_timeout_s) == (0.00025, 40, 1.5)
    assert config.instances == 3 and config.version_policy.kind == "all"
    triton = config.as_triton()
    assert triton["dynamic_batching"]["max_queue_delay_microseconds"] == 250
    assert triton["version_policy"] == {"all": {}}
    # Settings given explicitly and overridden by the file are named once in the log.
    (record,) = [r for r in caplog.records if r.getMessage() == "config.pbtxt overrides server defaults"]
    assert record.settings == [
        "FWS_MAX_BATCH_SIZE",
        "FWS_MAX_QUEUE_DELAY_MS",
        "FWS_MAX_QUEUE_ROWS",
        "FWS_REQUEST_TIMEOUT_S",
    ]
