"""Provider choice (service/providers.py): every branch, with onnxruntime's provider list monkeypatched."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest

from service import providers
from service.predictor import ModelLoadError, load_model, warm_up
from service.providers import CPU, CUDA, DeviceUnavailableError, ProviderChoice

T11 = Path(__file__).resolve().parents[2] / "model_repository" / "fastweights_t11" / "1" / "model.onnx"


@pytest.fixture
def preloads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record calls of the CUDA library preloading instead of making them."""
    calls: list[str] = []
    monkeypatch.setattr(providers, "preload_cuda_libraries", lambda: calls.append("preload"))
    return calls


def _build(monkeypatch: pytest.MonkeyPatch, *, cuda: bool, gpu: bool) -> None:
    available = [CUDA, CPU] if cuda else [CPU]
    monkeypatch.setattr(providers.ort, "get_available_providers", lambda: available)
    monkeypatch.setattr(providers, "gpu_present", lambda: gpu)


def test_device_cpu_asks_for_the_cpu_provider_only(monkeypatch, preloads) -> None:
    _build(monkeypatch, cuda=True, gpu=True)
    choice = providers.choose_providers("cpu")
    assert choice.providers == (CPU,) and not choice.wants_cuda and preloads == []


def test_device_cuda_on_a_build_without_cuda_is_refused_naming_the_package(monkeypatch, preloads) -> None:
    _build(monkeypatch, cuda=False, gpu=True)
    with pytest.raises(DeviceUnavailableError, match=r"no CUDA execution provider.*onnxruntime-gpu"):
        providers.choose_providers("cuda")


def test_device_cuda_on_a_cuda_build_asks_for_cuda_then_cpu_and_preloads_the_libraries(
    monkeypatch, preloads
) -> None:
    _build(monkeypatch, cuda=True, gpu=False)  # required: asked for even where no device is seen
    choice = providers.choose_providers("cuda")
    assert choice.providers == (CUDA, CPU) and choice.device == "cuda" and preloads == ["preload"]


def test_auto_on_a_build_without_cuda_uses_the_cpu(monkeypatch, preloads) -> None:
    _build(monkeypatch, cuda=False, gpu=True)
    choice = providers.choose_providers("auto")
    assert choice.providers == (CPU,) and "no CUDA provider" in choice.reason and preloads == []


def test_auto_without_a_gpu_device_uses_the_cpu(monkeypatch, preloads) -> None:
    _build(monkeypatch, cuda=True, gpu=False)
    choice = providers.choose_providers("auto")
    assert choice.providers == (CPU,) and "no NVIDIA GPU" in choice.reason and preloads == []


def test_auto_with_a_gpu_device_and_a_cuda_build_asks_for_cuda(monkeypatch, preloads) -> None:
    _build(monkeypatch, cuda=True, gpu=True)
    choice = providers.choose_providers("auto")
    assert choice.providers == (CUDA, CPU) and choice.device == "auto" and preloads == ["preload"]


def test_an_unknown_device_is_a_value_error(monkeypatch) -> None:
    with pytest.raises(ValueError, match="auto, cpu or cuda"):
        providers.choose_providers("tpu")


def test_cuda_visible_devices_minus_one_hides_the_gpu(monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert providers.gpu_present() is False


def test_a_required_cuda_provider_missing_from_the_session_stops_with_the_loaders_reason(
    monkeypatch,
) -> None:
    monkeypatch.setattr(
        providers, "cuda_load_failure", lambda: "libcublasLt.so.13: cannot open shared object"
    )
    choice = ProviderChoice("cuda", (CUDA, CPU), "device=cuda requested")
    with pytest.raises(DeviceUnavailableError, match=r"FWS_DEVICE=cuda.*libcublasLt\.so\.13"):
        providers.confirm_providers(choice, [CPU])
    providers.confirm_providers(choice, [CUDA, CPU])  # got it: nothing to say


def test_auto_falls_back_to_cpu_with_one_warning_per_process(monkeypatch, caplog) -> None:
    monkeypatch.setattr(providers, "cuda_load_failure", lambda: "libcudnn.so.9: not found (test)")
    providers._warn_cpu_fallback.cache_clear()
    choice = ProviderChoice("auto", (CUDA, CPU), "NVIDIA GPU device found")
    with caplog.at_level(logging.WARNING, logger="service.providers"):
        for _ in range(4):  # one per model of the repository
            providers.confirm_providers(choice, [CPU])
    warnings = [r for r in caplog.records if r.name == "service.providers"]
    assert len(warnings) == 1
    assert warnings[0].reason == "libcudnn.so.9: not found (test)"  # type: ignore[attr-defined]
    assert warnings[0].providers == [CPU]  # type: ignore[attr-defined]
    providers._warn_cpu_fallback.cache_clear()


def test_cpu_choices_are_never_questioned(monkeypatch) -> None:
    monkeypatch.setattr(providers, "cuda_load_failure", lambda: pytest.fail("must not be asked"))
    providers.confirm_providers(ProviderChoice("cpu", (CPU,), "device=cpu requested"), [CPU])


def test_preloading_sends_what_onnxruntime_prints_to_the_debug_log_not_stdout(
    monkeypatch, capsys, caplog
) -> None:
    def noisy_preload() -> None:
        print("Failed to load libcublasLt.so.13: no such file")

    monkeypatch.setattr(providers.ort, "preload_dlls", noisy_preload, raising=False)
    providers.preload_cuda_libraries.cache_clear()
    with caplog.at_level(logging.DEBUG, logger="service.providers"):
        providers.preload_cuda_libraries()
    providers.preload_cuda_libraries.cache_clear()
    assert capsys.readouterr().out == ""
    (record,) = [r for r in caplog.records if r.name == "service.providers"]
    assert record.output == ["Failed to load libcublasLt.so.13: no such file"]  # type: ignore[attr-defined]


def test_preloading_is_a_no_op_on_an_onnxruntime_without_preload_dlls(monkeypatch) -> None:
    monkeypatch.delattr(providers.ort, "preload_dlls", raising=False)
    providers.preload_cuda_libraries.cache_clear()
    providers.preload_cuda_libraries()
    providers.preload_cuda_libraries.cache_clear()


def test_the_cuda_provider_librarys_load_error_is_reported_when_it_does_not_load() -> None:
    reason = providers.cuda_load_failure()
    if CUDA in providers.ort.get_available_providers() and not providers.gpu_present():
        assert reason is not None and "cannot open shared object" in reason  # this CPU-only machine
    else:
        assert reason is None or isinstance(reason, str)


def test_warm_up_on_cpu_runs_one_and_two_rows() -> None:
    assert providers.warm_up_batch_sizes([CPU], 256) == (1, 2)
    assert providers.warm_up_batch_sizes([CPU], 1) == (1,)


def test_warm_up_on_cuda_covers_every_power_of_two_up_to_the_largest_batch() -> None:
    assert providers.warm_up_batch_sizes([CUDA, CPU], 256) == (1, 2, 4, 8, 16, 32, 64, 128, 256)
    assert providers.warm_up_batch_sizes([CUDA, CPU], 100) == (1, 2, 4, 8, 16, 32, 64, 100)


def test_warm_up_runs_each_batch_size_it_is_given() -> None:
    model = load_model(T11, "fastweights_t11", "1", device="cpu")
    seen: list[int] = []
    run = model.run
    model.run = lambda tokens: (seen.append(len(tokens)), run(tokens))[1]  # type: ignore[method-assign]
    warm_up(model, providers.warm_up_batch_sizes([CUDA], 64))
    assert seen == [1, 2, 4, 8, 16, 32, 64]


def test_loading_with_device_cuda_on_this_cpu_only_machine_is_a_model_load_error() -> None:
    if providers.gpu_present():
        pytest.skip("a GPU is present: the CUDA provider may really work here")
    with pytest.raises(ModelLoadError, match="FWS_DEVICE=cuda"):
        load_model(T11, "fastweights_t11", "1", device="cuda")


def test_a_worker_marks_the_app_draining_when_uvicorns_signal_handler_runs() -> None:
    import uvicorn

    from service.workers import DrainingServer, drain_on_signals

    server = uvicorn.Server(uvicorn.Config(app=None))
    state = SimpleNamespace(draining=False)
    before = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, server.handle_exit)
        drain_on_signals(state)
        handler = signal.getsignal(signal.SIGTERM)
        assert callable(handler) and handler != server.handle_exit
        handler(signal.SIGTERM, None)
        assert state.draining is True and server.should_exit is True
        # a DrainingServer drains by itself, and a handler that is not uvicorn's is left alone
        own = DrainingServer(uvicorn.Config(app=None))
        signal.signal(signal.SIGTERM, own.handle_exit)
        drain_on_signals(state)
        assert signal.getsignal(signal.SIGTERM) == own.handle_exit
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        drain_on_signals(state)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, before)
