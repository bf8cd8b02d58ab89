"""Checks made once before the server starts, so a start that cannot be what was asked for stops at once."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from contract import ONNX_FILENAME, is_version_name
from service.config import Settings
from service.providers import choose_providers, confirm_providers


def check_device(settings: Settings) -> None:
    """`FWS_DEVICE=cuda`: raise `DeviceUnavailableError` unless a CUDA session can really be created here.

    The check opens one session on a model of the repository (the smallest `model.onnx`), as every model
    load will, and looks at the providers it really got. Without a model file, the build check alone.
    Every model load checks again (`service.predictor.load_model`); this one turns the failure into one
    clear line and exit status 2 before any worker starts.
    """
    if settings.device != "cuda":
        return
    choice = choose_providers("cuda")
    probe = _smallest_model(settings.model_repository)
    if probe is None:
        return
    options = ort.SessionOptions()
    options.log_severity_level = 4  # its errors are reported by confirm_providers, in JSON
    try:
        session = ort.InferenceSession(str(probe), sess_options=options, providers=list(choice.providers))
    except Exception:  # a bad file, not a device question: the model load reports it with its name
        return
    confirm_providers(choice, session.get_providers())


def _smallest_model(repository: Path) -> Path | None:
    found = [p for p in repository.glob(f"*/*/{ONNX_FILENAME}") if is_version_name(p.parent.name)]
    return min(found, key=lambda p: p.stat().st_size) if found else None
