"""What both peers share: the repository's bucket sessions and a batch predict (smallest bucket per row)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from contract import scan_repository
from contract.vocab import Vocabulary

ROOT = Path(__file__).resolve().parents[2]


class Predictor:
    def __init__(self, repository: Path | None = None, threads: int = 1):
        repository = repository or Path(os.environ.get("BENCH_REPOSITORY", ROOT / "model_repository"))
        self.vocab = Vocabulary()
        self.sessions = []
        for entry in scan_repository(repository):
            if entry.config.stateful:
                continue  # the stream model of memory sessions, not a length bucket
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            self.sessions.append((entry.seq_len, ort.InferenceSession(str(entry.model_path), so)))
        self.sessions.sort(key=lambda s: s[0])

    def predict(self, sequences: list[str]) -> list[dict[str, object]]:
        """One ORT run per bucket present in the batch; answers in input order."""
        out: list[dict[str, object]] = [{}] * len(sequences)
        longest = max(len(s) for s in sequences)
        groups: dict[int, list[int]] = {}
        for i, s in enumerate(sequences):
            t = next((t for t, _ in self.sessions if len(s) <= t), None)
            if t is None:
                out[i] = {"error": "sequence too long"}
                continue
            groups.setdefault(t, []).append(i)
        del longest
        for t, session in self.sessions:
            rows = groups.get(t)
            if not rows:
                continue
            tokens = np.array([self.vocab.encode(sequences[i], t) for i in rows], dtype=np.int64)
            logits = session.run(["logits"], {"tokens": tokens})[0]
            probs = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs /= probs.sum(axis=1, keepdims=True)
            best = probs.argmax(axis=1)
            for j, i in enumerate(rows):
                out[i] = {
                    "value": self.vocab.class_to_value(int(best[j])),
                    "confidence": float(probs[j, best[j]]),
                }
        return out
