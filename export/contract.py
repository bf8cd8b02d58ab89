"""The ONNX contract, declared once: export writes it, verification checks it, the service reads it.

Pure Python on purpose (no torch, no onnx): the service imports this module.

Model repository layout (Triton's), one model name per length bucket because an unrolled graph has a fixed T::

    model_repository/
      fastweights_t11/
        config.pbtxt
        1/model.onnx

Every bucket of one trained model shares a `family` (the logical model name users ask for, e.g.
"fastweights"); the service answers a query with the smallest bucket whose T fits it.
"""

from __future__ import annotations

from dataclasses import dataclass

INPUT_TOKENS = "tokens"  # int64 [batch, T], left padded with the PAD id
OUTPUT_LOGITS = "logits"  # float32 [batch, num_classes]
OUTPUT_ATTENTION = "memory_attention"  # float32 [batch, T]: fast-memory weight per past position, final step
BATCH_AXIS = "batch"

INPUT_DTYPE = "int64"
OUTPUT_DTYPE = "float32"
ONNX_FILENAME = "model.onnx"
CONFIG_FILENAME = "config.pbtxt"

DEFAULT_FAMILY = "fastweights"
# T = 2K + 3: buckets for K = 1, 4, 8 and 12 pairs. 27 (K=12) is longer than the default model's training
# range (K <= 8) and exists to measure length generalization.
DEFAULT_BUCKETS: tuple[int, ...] = (5, 11, 19, 27)


def bucket_model_name(family: str, seq_len: int) -> str:
    return f"{family}_t{seq_len}"


class MetadataKeys:
    """Keys of the metadata_props every exported graph carries (values are strings; JSON where noted)."""

    FAMILY = "fastweights.family"
    SEQ_LEN = "fastweights.seq_len"  # int
    VOCAB = "fastweights.vocab"  # JSON list of tokens, index = id
    PAD_ID = "fastweights.pad_id"  # int
    ANSWER_CLASSES = "fastweights.answer_classes"  # JSON list: class index -> value string
    MODEL_CONFIG = "fastweights.model_config"  # JSON of model.config.ModelConfig
    METRICS = "fastweights.metrics"  # JSON: test metrics of the source checkpoint
    SOURCE_SHA256 = "fastweights.source_checkpoint_sha256"
    EXPORTER = "fastweights.exporter"  # e.g. "torch 2.13.0 dynamo=False"
    OPSET = "fastweights.opset"  # int
    CODE_VERSION = "fastweights.code_version"

    REQUIRED = (FAMILY, SEQ_LEN, VOCAB, PAD_ID, ANSWER_CLASSES, MODEL_CONFIG)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[str | int, ...]  # symbolic dims are strings


def input_specs(seq_len: int) -> tuple[TensorSpec, ...]:
    return (TensorSpec(INPUT_TOKENS, INPUT_DTYPE, (BATCH_AXIS, seq_len)),)


def output_specs(seq_len: int, num_classes: int) -> tuple[TensorSpec, ...]:
    return (
        TensorSpec(OUTPUT_LOGITS, OUTPUT_DTYPE, (BATCH_AXIS, num_classes)),
        TensorSpec(OUTPUT_ATTENTION, OUTPUT_DTYPE, (BATCH_AXIS, seq_len)),
    )
