"""The model registry: every model of the repository, its serving version, its batcher, its state.

This is the API the HTTP layers (native `/v1` and Open Inference Protocol `/v2`) call; it knows nothing of
HTTP. One model name per length bucket (`fastweights_t11`, ...); the native API picks the bucket, V2 users
name it. Typical use::

    registry = ModelRegistry(settings, metrics)
    await registry.start()                    # executor + load every model of the repository
    model = registry.get("fastweights_t11")   # LoadedModel: .info (ModelInfo: seq_len, vocab_tokens, pad_id,
                                              #   answer_classes, inputs/outputs specs, providers, version)
    out = await registry.infer("fastweights_t11", tokens)   # tokens (B, T) int64 -> {"logits": (B, C),
                                                            #   "memory_attention": (B, T)} via the batcher
    await registry.load("fastweights_t11")    # (re)load what config.pbtxt says; swaps only once all passed
    await registry.unload("fastweights_t11")
    registry.index()                          # [{"name", "version", "state", "reason"}]
                                              #   (the /v2/repository/index rows)
    await registry.close()

Errors, each with a readable message: `ModelNotFoundError` (no such model or version: 404) and
`ModelNotReadyError` (known but not loaded: 503/400), both `RegistryError`s; `ModelLoadError` (from the
predictor or the config: load, warm-up or signature check failed; the old versions, if any, keep serving);
and from the batcher `QueueFullError` (503 + Retry-After), `DeadlineExceededError` (504),
`BatcherClosedError` (503, unloading/shutting down).

Each model obeys its config.pbtxt (`service.serving_config`): batching, instance count and version policy,
with the FWS_ settings as defaults. Hot reload: `load(name)` reads the model folder and its config again,
builds fresh sessions for the versions the policy selects, warms and checks each (signature against the
config and the serving version), and only then swaps them in together. Requests already queued or running
keep the version (and batcher) they started on; the old batchers drain in the background.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from contract import ModelFolder, read_model_folder, scan_models
from service.batcher import Batcher
from service.config import Settings
from service.metrics import Metrics
from service.predictor import LoadedModel, ModelLoadError, load_model
from service.serving_config import ServingConfig, serving_config
from service.signature import check_new_version

log = logging.getLogger("service.registry")

__all__ = [
    "ModelLoadError",
    "ModelNotFoundError",
    "ModelNotReadyError",
    "ModelRegistry",
    "ModelState",
    "RegistryError",
]


class RegistryError(RuntimeError):
    """A model or version that is not there or not ready (the lookup errors, not load failures)."""


class ModelNotFoundError(RegistryError):
    """No model (or no such version of it) in the repository."""


class ModelNotReadyError(RegistryError):
    """The model exists but is not loaded (unloaded, failed to load, or still loading)."""


class ModelState(StrEnum):
    READY = "READY"
    LOADING = "LOADING"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass(frozen=True)
class _Served:
    model: LoadedModel
    batcher: Batcher


@dataclass
class _Entry:
    name: str
    state: ModelState = ModelState.UNAVAILABLE
    reason: str = ""
    served: dict[str, _Served] = field(default_factory=dict)  # version -> its session and batcher
    # The highest served version, the one a request that names no version gets (kept, not computed: every
    # request asks); set together with `served` by `serve`.
    model: LoadedModel | None = None
    config: ServingConfig | None = None  # what the served versions run with
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def serve(self, served: dict[str, _Served], config: ServingConfig | None) -> dict[str, _Served]:
        """Swap in `served` (no await: atomic for the event loop); returns what served before."""
        old = self.served
        self.served, self.config = served, config
        self.model = served[max(served, key=int)].model if served else None
        return old


class ModelRegistry:
    def __init__(self, settings: Settings, metrics: Metrics | None = None):
        self.settings = settings
        self.metrics = metrics or Metrics()
        self._entries: dict[str, _Entry] = {}
        # family -> its ready buckets, shortest first; cleared wherever an entry's model or state changes
        self._family_buckets: dict[str, tuple[LoadedModel, ...]] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self.sessions: Any = None  # the SessionManager (service.sessions), for the V2 sequence flow

    # -- life cycle ---------------------------------------------------------------------------------------

    async def start(self, load_all: bool = True) -> list[ModelLoadError]:
        """Create the inference executor and (by default) load every model of the repository.

        Returns the load failures (also logged and kept as each model's `reason`); never raises for them.
        """
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.settings.inference_threads, thread_name_prefix="ort")
        failures: list[ModelLoadError] = []
        if load_all:
            repo = self.settings.model_repository
            names = [folder.name for folder in scan_models(repo)]
            if not names:
                log.error("no models found", extra={"repository": str(repo)})
            for name in names:
                try:
                    await self.load(name)
                except ModelLoadError as exc:
                    failures.append(exc)
        return failures

    async def close(self) -> None:
        """Drain every batcher (queued requests are still answered), then stop the executor."""
        for entry in self._entries.values():
            for served in entry.served.values():
                await served.batcher.close(drain=True)
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    # -- queries ------------------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """At least one model serves requests."""
        return any(e.state is ModelState.READY for e in self._entries.values())

    def names(self) -> list[str]:
        """Every model known: loaded ones and those in the repository directory."""
        return sorted(set(self._entries) | set(self._folders()))

    def folders(self) -> list[ModelFolder]:
        """The repository's model folders as they are on disk now, sorted by name."""
        return list(self._folders().values())

    def _folders(self) -> dict[str, ModelFolder]:
        """The repository's model folders as they are on disk now (read on each call: a few stat calls)."""
        return {folder.name: folder for folder in scan_models(self.settings.model_repository)}

    def get(self, name: str, version: str | None = None) -> LoadedModel:
        """The newest served version of `name` (or that exact `version`, which must be served)."""
        entry = self._entries.get(name)
        if entry is None:
            if name in self._folders():
                raise ModelNotReadyError(f"model {name!r} is not loaded")
            raise ModelNotFoundError(f"unknown model {name!r}")
        if entry.model is None or entry.state is not ModelState.READY:
            why = f": {entry.reason}" if entry.reason else ""
            raise ModelNotReadyError(f"model {name!r} is not ready ({entry.state.value}){why}")
        if version is not None:
            served = entry.served.get(version)
            if served is None:
                versions = ", ".join(sorted(entry.served, key=int))
                raise ModelNotFoundError(
                    f"model {name!r} has no version {version[:40]!r} loaded (serving version {versions})"
                )
            return served.model
        return entry.model

    def serving_config(self, name: str) -> ServingConfig:
        """The batching, instances and version policy `name` runs with (config.pbtxt over FWS_ defaults)."""
        self.get(name)
        config = self._entries[name].config
        assert config is not None
        return config

    def served_versions(self, name: str) -> list[str]:
        """The versions of `name` being served, oldest first."""
        self.get(name)
        return sorted(self._entries[name].served, key=int)

    def is_ready(self, name: str, version: str | None = None) -> bool:
        try:
            self.get(name, version)
        except RegistryError:
            return False
        return True

    def ready_models(self) -> list[LoadedModel]:
        return [
            e.model for e in self._entries.values() if e.state is ModelState.READY and e.model is not None
        ]

    def family_buckets(self, family: str) -> tuple[LoadedModel, ...]:
        """Ready models of one family, shortest sequence length first (the native API picks the first fit).

        Asked on every request, so the answer is kept until a model is loaded, fails or is unloaded.
        """
        buckets = self._family_buckets.get(family)
        if buckets is None:
            buckets = tuple(
                sorted(
                    (m for m in self.ready_models() if m.info.family == family and not m.info.stateful),
                    key=lambda m: m.info.seq_len,
                )
            )
            self._family_buckets[family] = buckets
        return buckets  # a tuple: the cached answer itself, safe to hand out

    def families(self) -> list[str]:
        return sorted({m.info.family for m in self.ready_models()})

    def queued_rows(self) -> int:
        return sum(s.batcher.queued_rows for e in self._entries.values() for s in e.served.values())

    def index(self) -> list[dict[str, Any]]:
        """Repository index rows (V2 `POST /v2/repository/index` shape): name, version, state, reason."""
        rows = []
        folders = self._folders()
        for name in sorted(set(self._entries) | set(folders)):
            entry = self._entries.get(name)
            folder = folders.get(name)
            latest = str(folder.versions[-1]) if folder is not None and folder.versions else ""
            if entry is None:
                reason = folder.problem if folder is not None and folder.problem else "unloaded"
                rows.append(
                    {"name": name, "version": latest, "state": ModelState.UNAVAILABLE.value, "reason": reason}
                )
            elif entry.served:
                rows += [
                    {"name": name, "version": v, "state": entry.state.value, "reason": entry.reason}
                    for v in sorted(entry.served, key=int)
                ]
            else:
                rows.append(
                    {"name": name, "version": latest, "state": entry.state.value, "reason": entry.reason}
                )
            for ignored in folder.ignored if folder is not None else ():
                rows.append(
                    {
                        "name": name,
                        "version": ignored.name,
                        "state": ModelState.UNAVAILABLE.value,
                        "reason": ignored.reason,
                    }
                )
        return rows

    # -- inference ----------------------------------------------------------------------------------------

    async def infer(
        self,
        name: str,
        tokens: np.ndarray,
        version: str | None = None,
        deadline: float | None = None,
        *,
        ids_checked: bool = False,
    ) -> dict[str, np.ndarray]:
        """Run `tokens` (B, T) int64 through the batcher of `name`; returns {"logits", "memory_attention"}.

        Token ids are range-checked unless `ids_checked` says the caller built them from the model's own
        vocabulary (`LoadedModel.encode`), which cannot produce an id out of range.

        `deadline` is an absolute `time.monotonic()` value; default now + settings.request_timeout_s (a
        caller may only shorten it). The request stays on the version it was queued for, even if a reload
        swaps in a newer one meanwhile.
        """
        model = self.get(name, version)
        entry = self._entries[name]
        batcher = entry.served[model.info.version].batcher
        assert entry.config is not None
        T = model.info.seq_len
        if tokens.ndim != 2 or tokens.shape[1] != T or tokens.shape[0] == 0:
            raise ValueError(
                f"tokens must have shape (B>=1, {T}) for model {name!r}, got {tuple(tokens.shape)}"
            )
        if tokens.dtype != np.int64:
            tokens = tokens.astype(np.int64)
        vocab_size = len(model.info.vocab_tokens)
        if not ids_checked and (tokens.min() < 0 or tokens.max() >= vocab_size):
            raise ValueError(f"token ids must be in [0, {vocab_size}) for model {name!r}")
        limit = time.monotonic() + entry.config.default_timeout_s
        deadline = limit if deadline is None else min(deadline, limit)
        return await batcher.submit(tokens, deadline)

    async def infer_rows(
        self, name: str, rows: np.ndarray, deadline: float | None = None, version: str | None = None
    ) -> dict[str, np.ndarray]:
        """Run rows already in the model's own layout (the stream model's packed chunk + state rows,
        `service.sessions.stream_model`) through its batcher: steps of different sessions share a run.

        With `version`, that version or ModelNotReadyError (503, retry) if a reload retired it meanwhile."""
        try:
            model = self.get(name, version)
        except ModelNotFoundError as exc:
            if version is None or name not in self._entries:
                raise
            raise ModelNotReadyError(f"version {version} of {name!r} was unloaded meanwhile; retry") from exc
        entry = self._entries[name]
        batcher = entry.served[model.info.version].batcher
        assert entry.config is not None
        limit = time.monotonic() + entry.config.default_timeout_s
        return await batcher.submit(rows, limit if deadline is None else min(deadline, limit))

    # -- loading ------------------------------------------------------------------------------------------

    async def load(self, name: str) -> LoadedModel:
        """Load (or reload) `name` as its config.pbtxt says; swap in only once every version passed.

        The folder and its config are read again. The versions the version policy selects are loaded, warmed
        up and checked (signature against the config and the serving version); only then are they swapped
        in, together, with the config's batching. Returns the newest. Raises `ModelNotFoundError` when the
        repository has no such model, `ModelLoadError` when the config or a version fails; then the
        previously served versions (if any) keep serving and `reason` says why.
        """
        repo = self.settings.model_repository
        model_dir = repo / name
        if not model_dir.is_dir():
            raise ModelNotFoundError(f"unknown model {name!r}: not in the model repository")
        entry = self._entries.setdefault(name, _Entry(name))
        async with entry.lock:
            if not entry.served:
                entry.state = ModelState.LOADING
                self._family_buckets.clear()
            folder = read_model_folder(model_dir)
            version = str(folder.versions[-1]) if folder.versions else ""
            loaded: dict[str, LoadedModel] = {}
            try:
                if folder.problem:
                    raise ModelLoadError(name, folder.problem)
                assert folder.config is not None  # no problem: the config was read
                config = serving_config(folder.config, self.settings)
                wanted = folder.served_versions()
                if not wanted:
                    policy = config.version_policy.as_json()
                    raise ModelLoadError(
                        name, f"version_policy {policy} selects none of the versions {list(folder.versions)}"
                    )
                for number in reversed(wanted):  # newest first: the one most likely to be new
                    version = str(number)
                    model = await self._load_version(folder, number, config)
                    check_new_version(model, folder.config, entry.model)
                    loaded[version] = model
            except ModelLoadError as exc:
                self._load_failed(entry, version, exc)
                raise
            old = entry.serve(
                {v: _Served(m, self._new_batcher(m, config)) for v, m in loaded.items()}, config
            )
            entry.state, entry.reason = ModelState.READY, ""
            self._family_buckets.clear()
            self.metrics.model_loads.labels(name, "ok").inc()
            self.metrics.model_ready.labels(name).set(1)
            for v, served in old.items():
                self.metrics.model_info.remove(name, v, served.model.info.providers[0])
                self._retire(served.batcher)
            for v, served in entry.served.items():
                self.metrics.model_info.labels(name, v, served.model.info.providers[0]).set(1)
            newest = entry.model
            assert newest is not None
            return newest

    async def _load_version(self, folder: ModelFolder, number: int, config: ServingConfig) -> LoadedModel:
        s = self.settings
        return await asyncio.get_running_loop().run_in_executor(
            None,  # not the inference executor: a slow load must not stall inference
            lambda: load_model(
                folder.model_path(number),
                folder.name,
                str(number),
                device=s.device,
                intra_op_threads=s.ort_intra_op_threads,
                simulated_delay_s=s.simulated_run_delay_ms / 1000.0,
                max_batch_size=config.max_batch_size,
            ),
        )

    def _load_failed(self, entry: _Entry, version: str, exc: ModelLoadError) -> None:
        name = entry.name
        self.metrics.model_loads.labels(name, "failed").inc()
        what = f"version {version}" if version else "the model"
        if entry.served:
            entry.state = ModelState.READY
            serving = ", ".join(sorted(entry.served, key=int))
            entry.reason = f"load of {what} failed, still serving version {serving}: {exc.reason}"
        else:
            entry.state = ModelState.UNAVAILABLE
            entry.reason = f"load of {what} failed: {exc.reason}"
            self.metrics.model_ready.labels(name).set(0)
        self._family_buckets.clear()
        log.error("model load failed", extra={"model": name, "version": version, "reason": exc.reason})

    async def unload(self, name: str) -> None:
        """Stop serving `name`; requests already queued on it still complete."""
        entry = self._entries.get(name)
        if entry is None:
            if name in self._folders():
                return  # known but never loaded: already unloaded
            raise ModelNotFoundError(f"unknown model {name!r}")
        async with entry.lock:
            old = entry.serve({}, None)
            entry.state, entry.reason = ModelState.UNAVAILABLE, "unloaded"
            self._family_buckets.clear()
            self.metrics.model_ready.labels(name).set(0)
            for v, served in old.items():
                self.metrics.model_info.remove(name, v, served.model.info.providers[0])
            for served in old.values():
                await served.batcher.close(drain=True)

    def _new_batcher(self, model: LoadedModel, config: ServingConfig) -> Batcher:
        assert self._executor is not None, "call start() first"
        s = self.settings
        executor = self._executor
        inline_max_rows = 0 if s.simulated_run_delay_ms > 0 else s.inline_max_rows
        if config.instances > 1:
            # Its own threads, one per instance, so that its runs compute side by side; never inline (an
            # inline run holds the event loop, and with it the other instances).
            executor = ThreadPoolExecutor(config.instances, thread_name_prefix=f"ort-{model.info.name}")
            inline_max_rows = 0
        batcher = Batcher(
            model.run,
            executor,
            name=model.info.name,
            max_batch_size=config.max_batch_size,
            max_queue_delay_s=config.max_queue_delay_s,
            max_queue_rows=config.max_queue_rows,
            default_timeout_s=config.default_timeout_s,
            # A simulated slow model must sleep in the executor, never on the event loop.
            inline_max_rows=inline_max_rows,
            metrics=self.metrics,
            preferred_batch_sizes=config.preferred_batch_sizes,
            workers=config.instances,
            own_executor=executor is not self._executor,
        )
        batcher.start()
        return batcher

    def _retire(self, batcher: Batcher) -> None:
        task = asyncio.get_running_loop().create_task(batcher.close(drain=True))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
