"""The one error type of the file contract."""

from __future__ import annotations

from pathlib import Path


class ContractError(ValueError):
    """A model file or repository entry breaking the contract; the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem
