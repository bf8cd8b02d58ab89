"""The file contract between the stages, declared once: train -> export -> repository -> service -> client.

Pure Python on purpose (no torch, no onnx, no numpy): the service and the client import it, and the
import-graph test (tests/unit/test_import_graph.py) keeps it that way. Modules:

- `contract.vocab`: the query grammar (``c9k8??c``), the vocabulary and the one encoder; `SequenceError`.
- `contract.tensors`: tensor names, dtypes and shapes of an exported graph; `check_io`.
- `contract.metadata`: the metadata_props keys every graph carries; `parse_metadata`.
- `contract.model_config`: config.pbtxt, its writer and its reader (batching, instances, version policy).
- `contract.repository`: the repository layout, version-folder naming, `scan_models`, `scan_repository`.
- `contract.stream`: the stateful ("stream") model of memory sessions: state tensor names and metadata keys.
"""

from contract.errors import ContractError
from contract.metadata import MetadataKeys, ModelMetadata, parse_metadata
from contract.model_config import (
    DEFAULT_MAX_BATCH_SIZE,
    PLATFORM,
    BucketConfig,
    VersionPolicy,
    bucket_model_name,
    config_from_text,
    read_config_pbtxt,
    render_config_pbtxt,
)
from contract.pbtxt import parse_pbtxt
from contract.repository import (
    CONFIG_FILENAME,
    DEFAULT_BUCKETS,
    DEFAULT_FAMILY,
    DEFAULT_VERSION,
    ONNX_FILENAME,
    Ignored,
    ModelFolder,
    RepositoryEntry,
    is_version_name,
    read_model_folder,
    scan_models,
    scan_repository,
    smallest_bucket,
)
from contract.tensors import (
    BATCH_AXIS,
    INPUT_DTYPE,
    INPUT_TOKENS,
    LOOP_OPS,
    OUTPUT_ATTENTION,
    OUTPUT_DTYPE,
    OUTPUT_LOGITS,
    TensorSpec,
    check_io,
    check_specs,
    input_specs,
    normalize_dtype,
    output_specs,
)

__all__ = [
    "BATCH_AXIS",
    "CONFIG_FILENAME",
    "DEFAULT_BUCKETS",
    "DEFAULT_FAMILY",
    "DEFAULT_MAX_BATCH_SIZE",
    "DEFAULT_VERSION",
    "INPUT_DTYPE",
    "INPUT_TOKENS",
    "LOOP_OPS",
    "ONNX_FILENAME",
    "OUTPUT_ATTENTION",
    "OUTPUT_DTYPE",
    "OUTPUT_LOGITS",
    "PLATFORM",
    "BucketConfig",
    "ContractError",
    "Ignored",
    "MetadataKeys",
    "ModelFolder",
    "ModelMetadata",
    "RepositoryEntry",
    "TensorSpec",
    "VersionPolicy",
    "bucket_model_name",
    "check_io",
    "check_specs",
    "config_from_text",
    "input_specs",
    "is_version_name",
    "normalize_dtype",
    "output_specs",
    "parse_metadata",
    "parse_pbtxt",
    "read_config_pbtxt",
    "read_model_folder",
    "render_config_pbtxt",
    "scan_models",
    "scan_repository",
    "smallest_bucket",
]
