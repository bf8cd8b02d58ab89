"""Input readers: every format streams rows with their line numbers; bad rows become row errors."""

from __future__ import annotations

import io

import pytest

from client.inputs import InputError, count_lines, format_from_path, read_rows, sniff_format


def rows_of(text: str, fmt: str | None, path: str = "-"):
    found, rows = read_rows(io.StringIO(text), fmt, path)
    return found, list(rows)


def test_jsonl_rows_carry_sequence_or_pairs_id_label_and_line():
    text = (
        '{"id": "a", "sequence": "c9k8??c", "label": "9"}\n'
        "\n"
        '{"pairs": [["c", "9"]], "query": "c"}\n'
        '{"id": 7, "sequence": "a1??a", "extra": 1}\n'
    )
    fmt, rows = rows_of(text, "jsonl")
    assert fmt == "jsonl"
    assert [r.line for r in rows] == [1, 3, 4]
    assert rows[0].id == "a" and rows[0].item == {"sequence": "c9k8??c"} and rows[0].label == "9"
    assert rows[1].id == 3 and rows[1].item == {"pairs": [["c", "9"]], "query": "c"} and rows[1].label is None
    # Unknown fields go to the server, which owns the grammar and rejects them per item.
    assert rows[2].id == 7 and rows[2].item == {"sequence": "a1??a", "extra": 1}


def test_jsonl_bad_rows_become_errors_with_their_line_numbers():
    _, rows = rows_of('{"sequence": "a1??a"}\n{not json\n[1, 2]\n', "jsonl")
    assert [(r.line, r.item is None) for r in rows] == [(1, False), (2, True), (3, True)]
    assert rows[1].error["code"] == "invalid_json" and "line 2" in rows[1].error["message"]
    assert rows[2].error["code"] == "invalid_row"


def test_text_rows_are_one_sequence_a_line_with_the_line_number_as_id():
    _, rows = rows_of("c9k8??c\n\n  a1??a  \r\nlast??x", "text")
    assert [(r.line, r.id, r.item) for r in rows] == [
        (1, 1, {"sequence": "c9k8??c"}),
        (3, 3, {"sequence": "a1??a"}),
        (4, 4, {"sequence": "last??x"}),
    ]


def test_csv_rows_use_the_header_and_report_the_line_a_record_starts_on():
    text = 'id,sequence,label\nr1,c9k8??c,9\n\n"r\n2",a1??a,\nr3\nr4,b2??b,2\n'
    _, rows = rows_of(text, "csv")
    assert [(r.line, r.id) for r in rows] == [(2, "r1"), (4, "r\n2"), (6, 6), (7, "r4")]
    assert rows[0].item == {"sequence": "c9k8??c"} and rows[0].label == "9"
    assert rows[1].label is None
    assert rows[2].item is None and rows[2].error["code"] == "invalid_row"
    assert rows[3].item == {"sequence": "b2??b"}


def test_csv_without_a_sequence_column_is_refused_as_a_whole():
    _, rows = read_rows(io.StringIO("id,seq\n1,a1??a\n"), "csv")
    with pytest.raises(InputError, match="sequence"):
        list(rows)


@pytest.mark.parametrize(
    ("first", "fmt"),
    [('{"sequence": "a1??a"}', "jsonl"), ("id,sequence", "csv"), ("a1??a", "text"), ("a,b", "text")],
)
def test_the_format_is_sniffed_from_the_first_line(first, fmt):
    assert sniff_format(first) == fmt
    found, _ = rows_of("\n" + first + "\n", None)
    assert found == fmt


def test_the_format_comes_from_the_extension_first():
    assert format_from_path("x.jsonl") == "jsonl"
    assert format_from_path("x.CSV") == "csv"
    assert format_from_path("x.txt") == "text"
    assert format_from_path("-") is None


def test_count_lines_counts_a_last_line_without_newline(tmp_path):
    p = tmp_path / "in.txt"
    p.write_text("a\nb\nc")
    assert count_lines(str(p)) == 3
    p.write_text("a\nb\n")
    assert count_lines(str(p)) == 2
    assert count_lines("-") is None
