"""Write the bucket configs (config.pbtxt) of a repository again from its graphs' metadata, graphs untouched.

    python -m export.configs [--repository model_repository] [--max-batch-size 256]

For a change to what the configs carry, without retraining (`make model`) or re-exporting the graphs.
Exit codes: 0 written, 2 bad repository.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from contract import DEFAULT_MAX_BATCH_SIZE, ContractError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.configs", description=__doc__.split("\n")[0])
    p.add_argument("--repository", type=Path, default=Path("model_repository"))
    p.add_argument("--max-batch-size", type=int, default=DEFAULT_MAX_BATCH_SIZE)
    args = p.parse_args(argv)
    from export.repository import rewrite_bucket_configs

    try:
        written = rewrite_bucket_configs(args.repository, args.max_batch_size)
    except ContractError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
