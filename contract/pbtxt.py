"""A small reader of the protobuf text format (enough for Triton model configs; no protobuf dependency)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from contract.errors import ContractError

_TOKEN = re.compile(r'\s*(?:(#[^\n]*)|("(?:[^"\\]|\\.)*")|([{}\[\]:,])|([^\s{}\[\]:,"#]+))')


def parse_pbtxt(text: str, path: str | Path = "<config.pbtxt>") -> dict[str, Any]:
    """Protobuf text format -> dict. Repeated fields (and ``key: [a, b]`` lists) become lists.

    Unknown syntax raises ContractError naming `path`.
    """
    tokens: list[str] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise ContractError(path, f"cannot parse config at character {pos}")
        pos = m.end()
        if m.group(1) is None:
            tokens.append(next(g for g in m.groups()[1:] if g is not None))
    return _parse_fields(_Tokens(tokens, path), end=None)


def as_list(value: Any) -> list[Any]:
    """A parsed field as a list (a field given once is a single value, repeated ones a list)."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


class _Tokens:
    def __init__(self, tokens: list[str], path: str | Path):
        self.tokens, self.i, self.path = tokens, 0, path

    def peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def next(self) -> str:
        tok = self.peek()
        if tok is None:
            raise ContractError(self.path, "config ends too early")
        self.i += 1
        return tok


def _parse_fields(it: _Tokens, end: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    while True:
        tok = it.peek()
        if tok is None:
            if end is not None:
                raise ContractError(it.path, f"missing {end!r}")
            return out
        if tok == end:
            it.next()
            return out
        if tok == ",":
            it.next()
            continue
        key = it.next()
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ContractError(it.path, f"expected a field name, got {key!r}")
        if it.peek() == ":":
            it.next()
        value = _parse_value(it)
        if key in out:
            prev = out[key]
            out[key] = (prev if isinstance(prev, list) else [prev]) + (
                value if isinstance(value, list) else [value]
            )
        else:
            out[key] = value


def _parse_value(it: _Tokens) -> Any:
    tok = it.next()
    if tok == "{":
        return _parse_fields(it, "}")
    if tok == "[":
        items: list[Any] = []
        while it.peek() != "]":
            if it.peek() == ",":
                it.next()
                continue
            items.append(_parse_value(it))
        it.next()
        return items
    if tok in "}]:,":
        raise ContractError(it.path, f"unexpected {tok!r}")
    if tok.startswith('"'):
        try:
            return json.loads(tok)
        except json.JSONDecodeError:
            raise ContractError(it.path, f"bad string {tok[:60]}") from None
    for convert in (int, float):
        try:
            value = convert(tok)
        except ValueError:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            break
        return value
    return tok  # an enum name (TYPE_INT64) or true/false


def quote(text: str) -> str:
    """A protobuf text-format string literal (JSON's escapes are a subset protobuf reads)."""
    return json.dumps(text, ensure_ascii=True)
