"""The one configuration object of the model layer."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

ModelKind = Literal["fast", "irnn", "lstm"]
MODEL_KINDS: tuple[str, ...] = ("fast", "irnn", "lstm")


class UnknownModelKindError(ValueError):
    """A configuration or checkpoint names a model kind this code does not know."""


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model; stored inside every checkpoint.

    Names follow the paper: ``decay`` is λ, ``fast_lr`` is η, ``inner_steps`` is S.
    """

    kind: str = "fast"
    vocab_size: int = 38  # PAD + 26 letters + 10 digits + '?'  (see model.data.VOCAB)
    num_classes: int = 10  # the answer is one digit
    embed_size: int = 100  # token embedding (the paper's one-hot x(t) goes through C; we learn a table)
    hidden_size: int = 50  # R in the paper's Table 1
    head_size: int = 100  # the paper's 100-unit ReLU layer before the softmax
    decay: float = 0.95  # λ
    fast_lr: float = 0.5  # η
    inner_steps: int = 1  # S
    recurrent_init_scale: float = 0.05  # W = 0.05·I for fast weights (the paper); IRNN uses 1.0·I
    memory_form: str = "attention"  # "attention" (no H×H state) or "matrix" (the explicit A(t))

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise UnknownModelKindError(f"unknown model kind {self.kind!r}; expected one of {MODEL_KINDS}")
        if self.memory_form not in ("attention", "matrix"):
            raise ValueError(f"memory_form must be 'attention' or 'matrix', got {self.memory_form!r}")
        if self.inner_steps < 1:
            raise ValueError(f"inner_steps must be >= 1, got {self.inner_steps}")
        if not 0.0 <= self.decay <= 1.0:
            raise ValueError(f"decay (λ) must be in [0, 1], got {self.decay}")
        for name in ("vocab_size", "num_classes", "embed_size", "hidden_size", "head_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown ModelConfig fields: {sorted(unknown)}")
        return cls(**values)
