"""The model repository (Triton's layout), read the same way by export checks, benchmarks and the service.

One model name per length bucket, because an unrolled graph has a fixed T::

    model_repository/
      fastweights_t11/
        config.pbtxt
        1/model.onnx

Every bucket of one trained model shares a `family` (the logical model name users ask for, e.g.
"fastweights"); the service answers a query with the smallest bucket whose T fits it. Version folders are
named by a number in ASCII digits; anything else in a model folder is ignored and reported with a reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from contract.errors import ContractError
from contract.model_config import PLATFORM, BucketConfig, read_config_pbtxt

ONNX_FILENAME = "model.onnx"
CONFIG_FILENAME = "config.pbtxt"
DEFAULT_FAMILY = "fastweights"
# T = 2K + 3: buckets for K = 1, 4, 8, 11, 14, 17, 19, 22, 24 and 26 pairs (26: every key letter once). The
# fewest whose mean cost per query (K uniform in 1..26) is within 10% of one graph per K at batch 1 and 256,
# with T = 5 and 11 kept (bench/bucket_sets.py; docs/results.md section 4 has the measured table).
DEFAULT_BUCKETS: tuple[int, ...] = (5, 11, 19, 25, 31, 37, 41, 47, 51, 55)
DEFAULT_VERSION = 1

# ASCII digits only ("²".isdigit() is True, int("²") raises), no leading zeros ("01" and "1" would be one
# version twice), and at most 18 digits (an int64, as V2 clients expect).
_VERSION_NAME = re.compile(r"0|[1-9][0-9]{0,17}")
VERSION_NAME_RULE = "version folders are named by a number in ASCII digits without leading zeros, e.g. 1/"


def is_version_name(name: str) -> bool:
    return _VERSION_NAME.fullmatch(name) is not None


@dataclass(frozen=True)
class Ignored:
    """Something in a model folder that is not served, and why (listed in the repository index)."""

    name: str  # the folder's name inside the model folder, e.g. "²" or "v2"
    reason: str


@dataclass(frozen=True)
class ModelFolder:
    """One model folder as found on disk: its config (None when unreadable), versions, and problems."""

    name: str
    path: Path
    config: BucketConfig | None
    versions: tuple[int, ...]  # version folders with a valid name, oldest first
    problem: str = ""  # why no version of this model can be served ("" when the folder is usable)
    ignored: tuple[Ignored, ...] = ()

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILENAME

    def model_path(self, version: int) -> Path:
        return self.path / str(version) / ONNX_FILENAME

    def served_versions(self) -> list[int]:
        """The versions its config's version_policy selects (none while the folder has a problem)."""
        if self.problem or self.config is None:
            return []
        return self.config.version_policy.select(self.versions)


def read_model_folder(model_dir: Path) -> ModelFolder:
    """Read one model folder; problems are returned (in `problem`, `ignored`), never raised."""
    versions, ignored = [], []
    for child in sorted(p for p in model_dir.iterdir() if p.is_dir()) if model_dir.is_dir() else []:
        if is_version_name(child.name):
            versions.append(int(child.name))
        elif not child.name.startswith("."):
            ignored.append(Ignored(child.name, f"ignored folder {child.name!r}: {VERSION_NAME_RULE}"))
    versions.sort()
    config: BucketConfig | None = None
    problem = ""
    try:
        config = _checked_config(model_dir)
    except ContractError as exc:  # the reason without the absolute path: it reaches HTTP answers
        in_config = Path(exc.path).name == CONFIG_FILENAME
        problem = f"{CONFIG_FILENAME}: {exc.problem}" if in_config else exc.problem
    if not problem and not versions:
        problem = "model folder has no numeric version folder (e.g. 1/)"
    return ModelFolder(model_dir.name, model_dir, config, tuple(versions), problem, tuple(ignored))


def _checked_config(model_dir: Path) -> BucketConfig:
    config_path = model_dir / CONFIG_FILENAME
    if not config_path.is_file():
        raise ContractError(model_dir, f"model folder has no {CONFIG_FILENAME}")
    cfg = read_config_pbtxt(config_path)
    if cfg.name != model_dir.name:
        raise ContractError(
            config_path, f"config name {cfg.name!r} differs from its folder {model_dir.name!r}"
        )
    if cfg.platform != PLATFORM:
        raise ContractError(config_path, f"platform {cfg.platform!r} is not {PLATFORM!r}")
    return cfg


def scan_models(root: str | Path) -> list[ModelFolder]:
    """Every model folder of a repository, sorted by name, each with its problems (a server lists them all
    and serves those it can). A missing root gives an empty list."""
    root = Path(root)
    if not root.is_dir():
        return []
    return [read_model_folder(p) for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]


@dataclass(frozen=True)
class RepositoryEntry:
    """One servable model version: ``<root>/<name>/<version>/model.onnx`` and its config."""

    config: BucketConfig
    version: int
    model_path: Path
    config_path: Path

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def family(self) -> str:
        return self.config.family

    @property
    def seq_len(self) -> int:
        return self.config.seq_len


def scan_repository(root: str | Path) -> list[RepositoryEntry]:
    """Every model of a repository at its highest version, sorted by (family, seq_len); strict.

    Torch- and onnx-free: it reads config.pbtxt files and checks that the .onnx files exist; opening the
    graphs (and reading their metadata) is the caller's job. Raises ContractError for a missing root, an
    empty repository, a model without config or versions, or a config whose name is not its folder's.
    """
    root = Path(root)
    if not root.is_dir():
        raise ContractError(root, "model repository is not a directory")
    entries = []
    for folder in scan_models(root):
        cfg = _checked_config(folder.path)  # raises the config's own error, naming its file
        if not folder.versions:
            raise ContractError(folder.path, "model folder has no numeric version folder (e.g. 1/)")
        model_path = folder.model_path(folder.versions[-1])
        if not model_path.is_file():
            raise ContractError(model_path, "missing model file")
        entries.append(RepositoryEntry(cfg, folder.versions[-1], model_path, folder.config_path))
    if not entries:
        raise ContractError(root, "model repository holds no models")
    return sorted(entries, key=lambda e: (e.family, e.seq_len))


def smallest_bucket(entries: Iterable[RepositoryEntry], family: str, length: int) -> RepositoryEntry | None:
    """The entry of `family` with the smallest T >= length (None when the query is too long for all)."""
    fitting = [e for e in entries if e.family == family and e.seq_len >= length]
    return min(fitting, key=lambda e: e.seq_len) if fitting else None
