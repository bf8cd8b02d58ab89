"""A new model version must keep the signature its config.pbtxt declares and the serving version has.

Checked by the registry before a (re)loaded version is swapped in: clients built against the serving version
(tensor names, dtypes, dims) must not find another model behind the same name after a hot reload.
"""

from __future__ import annotations

from contract import BucketConfig, ContractError, check_specs
from contract.stream import STREAM_PARAMETER
from service.predictor import LoadedModel, ModelLoadError


def check_new_version(model: LoadedModel, config: BucketConfig, serving: LoadedModel | None) -> None:
    """Raise `ModelLoadError` saying what differs between `model` and its config or the serving version."""
    info = model.info
    where = f"{info.name}/{info.version}"
    family = (
        config.parameters.get(STREAM_PARAMETER) or config.family
    )  # a stream graph is of its buckets' family
    try:
        if info.family != family:
            raise ContractError(where, f"graph family {info.family!r} differs from config.pbtxt's {family!r}")
        check_specs("input", info.inputs, config.inputs, where, "config.pbtxt declares")
        check_specs("output", info.outputs, config.outputs, where, "config.pbtxt declares")
        if serving is not None:
            has = f"the serving version {serving.info.version} has"
            check_specs("input", info.inputs, serving.info.inputs, where, has)
            check_specs("output", info.outputs, serving.info.outputs, where, has)
    except ContractError as exc:
        raise ModelLoadError(info.name, exc.problem) from None
