"""Which onnxruntime execution providers a session asks for, and whether it really got them.

`FWS_DEVICE` (`Settings.device`):

- `cpu`: the CPU provider only.
- `cuda`: CUDA is required. When this onnxruntime has no CUDA provider, or a session comes up without it
  (no GPU, no driver, CUDA or cuDNN libraries missing), the start stops with one clear error, as Triton
  refuses a `KIND_GPU` instance group it cannot place; it never serves on CPU when a GPU was asked for.
- `auto`: CUDA when this onnxruntime has the provider and an NVIDIA device is present, else CPU. When a
  session asked for CUDA and came up without it, it serves on CPU and one structured warning says why.

`get_available_providers()` lists what the wheel was built with, not what works, so the truth is
`session.get_providers()` after creation (`confirm_providers`). onnxruntime's own logger prints coloured,
non-JSON lines to stderr; `quiet_onnxruntime_log` keeps it to fatal errors, and what it would have said about
CUDA is said again here, in the service's JSON logs (`cuda_load_failure`).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import glob
import io
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass

import onnxruntime as ort

log = logging.getLogger("service.providers")

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

# onnxruntime's logging severities: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal.
_ORT_FATAL = 4
_ORT_WARNING = 2


class DeviceUnavailableError(RuntimeError):
    """`FWS_DEVICE=cuda` where the CUDA execution provider cannot be created; the message says why."""


@dataclass(frozen=True)
class ProviderChoice:
    """What to ask onnxruntime for (`providers`, in order of preference), for which `device`, and why."""

    device: str  # the setting: auto, cpu or cuda
    providers: tuple[str, ...]
    reason: str

    @property
    def wants_cuda(self) -> bool:
        return CUDA in self.providers


def gpu_present() -> bool:
    """True only when an NVIDIA GPU is really usable by this process (not merely compiled into the wheel)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return bool(glob.glob("/dev/nvidia[0-9]*")) or bool(glob.glob("/proc/driver/nvidia/gpus/*"))


def choose_providers(device: str = "auto") -> ProviderChoice:
    """The providers to ask for. Raises `DeviceUnavailableError` for `cuda` on a build without CUDA."""
    if device == "cpu":
        return ProviderChoice(device, (CPU,), "device=cpu requested")
    has_cuda = CUDA in ort.get_available_providers()
    if device == "cuda":
        if not has_cuda:
            raise DeviceUnavailableError(
                f"FWS_DEVICE=cuda, but this onnxruntime ({ort.__version__}) has no CUDA execution provider:"
                " install onnxruntime-gpu (the GPU image has it)"
            )
        preload_cuda_libraries()
        return ProviderChoice(device, (CUDA, CPU), "device=cuda requested")
    if device != "auto":
        raise ValueError(f"device must be auto, cpu or cuda, not {device!r}")
    if not has_cuda:
        return ProviderChoice(device, (CPU,), "this onnxruntime build has no CUDA provider")
    if not gpu_present():
        return ProviderChoice(device, (CPU,), "no NVIDIA GPU device found")
    preload_cuda_libraries()
    return ProviderChoice(device, (CUDA, CPU), "NVIDIA GPU device found")


def confirm_providers(choice: ProviderChoice, session_providers: Iterable[str]) -> None:
    """Check what a new session really uses against `choice`.

    CUDA asked for and missing: `DeviceUnavailableError` when it was required (`device=cuda`); under `auto`,
    one warning per process (every model would say the same) and the session serves on CPU.
    """
    if not choice.wants_cuda or CUDA in session_providers:
        return
    why = cuda_load_failure() or "onnxruntime created the session without it (no usable GPU or driver?)"
    if choice.device == "cuda":
        raise DeviceUnavailableError(
            f"FWS_DEVICE=cuda, but onnxruntime could not create the CUDA execution provider: {why}"
        )
    _warn_cpu_fallback(why)


@functools.cache
def _warn_cpu_fallback(why: str) -> None:
    log.warning(
        "CUDA execution provider unavailable: serving on CPU",
        extra={"device": "auto", "providers": [CPU], "reason": why},
    )


def cuda_load_failure() -> str | None:
    """Why onnxruntime's CUDA provider library does not load here (the dynamic loader's message), or None.

    The same check onnxruntime makes, without its coloured log: load the provider's shared library, which
    needs the CUDA and cuDNN libraries (e.g. `libcublasLt.so.13: cannot open shared object file`).
    """
    library = os.path.join(os.path.dirname(ort.__file__), "capi", "libonnxruntime_providers_cuda.so")
    if not os.path.isfile(library):
        return None  # another platform's layout: nothing more specific to say
    try:
        ctypes.CDLL(library)
    except OSError as exc:
        return str(exc)
    return None


@functools.cache
def preload_cuda_libraries() -> None:
    """Let onnxruntime load the CUDA and cuDNN libraries of NVIDIA's wheels (`onnxruntime-gpu[cuda,cudnn]`)
    from site-packages, so they are found without LD_LIBRARY_PATH (onnxruntime >= 1.21; a no-op before).

    `preload_dlls` prints what it could not load; that goes to the JSON log (debug: the error that matters,
    if any, is reported once by `confirm_providers`).
    """
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            preload()
    except Exception as exc:  # a broken install must not stop a start that may not need these libraries
        printed.write(f"preload_dlls failed: {exc}\n")
    lines = [line for line in printed.getvalue().splitlines() if line.strip()]
    if lines:
        log.debug("onnxruntime.preload_dlls", extra={"output": lines})


def quiet_onnxruntime_log(log_level: str = "info") -> None:
    """Keep onnxruntime's default logger (coloured text on stderr) to fatal errors; warnings at debug level.

    Its errors reach the service as exceptions, logged in JSON; its provider messages are replaced by
    `confirm_providers`. Call before the first session is created.
    """
    ort.set_default_logger_severity(_ORT_WARNING if log_level.lower() == "debug" else _ORT_FATAL)


def warm_up_batch_sizes(providers: Iterable[str], max_batch_size: int) -> tuple[int, ...]:
    """Batch sizes a new session runs once before it serves.

    On CPU, 1 and 2 (the first runs allocate; larger batches cost no first-run penalty worth the start time).
    On CUDA every power of two up to `max_batch_size` and that size itself: the CUDA provider picks kernels
    and grows its memory arena per input shape, so the first request of each size would otherwise pay it.
    """
    top = max(1, max_batch_size)
    if CUDA not in providers:
        return tuple(b for b in (1, 2) if b <= top) or (1,)
    sizes = {top}
    size = 1
    while size < top:
        sizes.add(size)
        size *= 2
    return tuple(sorted(sizes))
