"""Self-describing checkpoints: everything needed to rebuild and judge a model travels inside the file."""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from contract.vocab import PAD_TOKEN, Vocabulary
from model.baselines import IRNN, LSTM
from model.config import ModelConfig, UnknownModelKindError
from model.fastweights import FastWeightsRNN

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file that is missing, unreadable or not one of ours; the message names the file."""


def build_model(config: ModelConfig, vocab: Vocabulary | None = None) -> nn.Module:
    pad_id = (vocab or Vocabulary()).pad_id
    if config.kind == "fast":
        return FastWeightsRNN(config, pad_id)
    if config.kind == "irnn":
        return IRNN(config, pad_id)
    if config.kind == "lstm":
        return LSTM(config, pad_id)
    raise UnknownModelKindError(f"unknown model kind {config.kind!r}")


def code_version() -> str:
    """Package version plus the git commit when run from a checkout."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        pkg = version("fastweights-serve")
    except PackageNotFoundError:
        pkg = "unknown"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{pkg}+{commit}" if commit else pkg


@dataclass
class Checkpoint:
    config: ModelConfig
    state_dict: dict[str, torch.Tensor]
    vocab_tokens: tuple[str, ...] = field(default_factory=lambda: Vocabulary().tokens)
    pad_token: str = PAD_TOKEN
    step: int = 0
    seed: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    train_args: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    optimizer_state: dict[str, Any] | None = None
    code_version: str = ""
    # Set when `state_dict` holds averaged weights (EMA/SWA, see model.train.WeightAverage): the averaging
    # settings, how many snapshots went in, and the raw trained weights a resumed run continues from.
    averaging: dict[str, Any] | None = None

    @property
    def vocab(self) -> Vocabulary:
        return Vocabulary(self.vocab_tokens, self.pad_token)

    def model(self) -> nn.Module:
        """The model with its weights, in eval mode."""
        net = build_model(self.config, self.vocab)
        net.load_state_dict(self.state_dict)
        return net.eval()


def save_checkpoint(ckpt: Checkpoint, path: str | Path) -> Path:
    """Write atomically (temp file + rename) so an interrupted run never leaves half a checkpoint; the temp
    file is this process's own, so two processes saving the same checkpoint never write into one file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format_version": FORMAT_VERSION,
        "config": ckpt.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in ckpt.state_dict.items()},
        "vocab_tokens": list(ckpt.vocab_tokens),
        "pad_token": ckpt.pad_token,
        "step": ckpt.step,
        "seed": ckpt.seed,
        "metrics": ckpt.metrics,
        "train_args": ckpt.train_args,
        "history": ckpt.history,
        "optimizer_state": ckpt.optimizer_state,
        "code_version": ckpt.code_version or code_version(),
        "averaging": ckpt.averaging,
    }
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or "config" not in payload or "state_dict" not in payload:
        raise CheckpointError(f"{path}: not a fastweights-serve checkpoint (no config/state_dict)")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {payload.get('format_version')!r} is not supported")
    try:
        config = ModelConfig.from_dict(payload["config"])
    except UnknownModelKindError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    return Checkpoint(
        config=config,
        state_dict=payload["state_dict"],
        vocab_tokens=tuple(payload["vocab_tokens"]),
        pad_token=payload["pad_token"],
        step=payload["step"],
        seed=payload["seed"],
        metrics=payload["metrics"],
        train_args=payload["train_args"],
        history=payload["history"],
        optimizer_state=payload["optimizer_state"],
        code_version=payload["code_version"],
        averaging=payload.get("averaging"),  # absent in checkpoints written before averaging existed
    )


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
