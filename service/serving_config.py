"""What one model runs with: its config.pbtxt, with the server's FWS_ settings where the file says nothing.

Triton's rule: a model's config.pbtxt sets its batching (max batch size, preferred sizes, queue delay, queue
size, default timeout), its instance count and its version policy. The FWS_ settings of the same names are
server-wide defaults for the fields a config leaves out. Read again on every (re)load.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from contract import BucketConfig, VersionPolicy
from service.config import Settings

log = logging.getLogger("service.serving_config")

# config.pbtxt field -> the FWS_ setting that is its server-wide default
DEFAULTED_BY = {
    "max_batch_size": "max_batch_size",
    "max_queue_delay_microseconds": "max_queue_delay_ms",
    "max_queue_size": "max_queue_rows",
    "default_timeout_microseconds": "request_timeout_s",
}


@dataclass(frozen=True)
class ServingConfig:
    """The batching, instances and version policy in effect for one model (counted in rows)."""

    max_batch_size: int
    preferred_batch_sizes: tuple[int, ...]
    max_queue_delay_s: float
    max_queue_rows: int
    default_timeout_s: float
    instances: int  # runs of this model that may compute at once (1: the shared executor, one at a time)
    instance_kind: str  # KIND_AUTO, KIND_CPU or KIND_GPU, as the config says
    version_policy: VersionPolicy
    from_config: frozenset[str]  # the config.pbtxt fields that were set (the rest: FWS_ defaults)

    def as_triton(self) -> dict[str, Any]:
        """The batching part of Triton's JSON model configuration, with the values really in effect."""
        batching: dict[str, Any] = {}
        if self.preferred_batch_sizes:
            batching["preferred_batch_size"] = list(self.preferred_batch_sizes)
        batching["max_queue_delay_microseconds"] = round(self.max_queue_delay_s * 1_000_000)
        batching["default_queue_policy"] = {
            "max_queue_size": self.max_queue_rows,
            "default_timeout_microseconds": round(self.default_timeout_s * 1_000_000),
            "allow_timeout_override": True,
        }
        return {
            "version_policy": self.version_policy.as_json(),
            "max_batch_size": self.max_batch_size,
            "dynamic_batching": batching,
        }


def serving_config(config: BucketConfig, settings: Settings) -> ServingConfig:
    """`config` over the server's defaults. Logs once when an FWS_ setting given explicitly is overridden."""
    given = {
        "max_batch_size": config.max_batch_size if config.max_batch_size > 0 else None,
        "max_queue_delay_microseconds": config.max_queue_delay_us,
        "max_queue_size": config.max_queue_size,
        "default_timeout_microseconds": config.default_timeout_us,
    }
    overridden = sorted(
        f"FWS_{DEFAULTED_BY[field].upper()}"
        for field, value in given.items()
        if value is not None and DEFAULTED_BY[field] in settings.model_fields_set
    )
    if overridden:
        log.warning(
            "config.pbtxt overrides server defaults",
            extra={"model": config.name, "settings": overridden},
        )
    delay_us = config.max_queue_delay_us
    timeout_us = config.default_timeout_us
    return ServingConfig(
        max_batch_size=config.max_batch_size if config.max_batch_size > 0 else settings.max_batch_size,
        preferred_batch_sizes=config.preferred_batch_sizes,
        max_queue_delay_s=delay_us / 1_000_000
        if delay_us is not None
        else settings.max_queue_delay_ms / 1000,
        max_queue_rows=config.max_queue_size or settings.max_queue_rows,
        default_timeout_s=timeout_us / 1_000_000 if timeout_us is not None else settings.request_timeout_s,
        instances=config.instance_count or 1,
        instance_kind=config.instance_kind,
        version_policy=config.version_policy,
        from_config=frozenset(
            [field for field, value in given.items() if value is not None]
            + (["preferred_batch_size"] if config.preferred_batch_sizes else [])
            + (["instance_group"] if config.instance_count is not None else [])
        ),
    )
