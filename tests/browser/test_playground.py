"""The playground page at `/`, in a real headless Chromium against a real server.

What the page shows is checked against what the API answers to the same request (httpx, same server): the
value, the attention bars (one per pair, in sequence order, the most attended one highlighted), and the API's
errors, word for word, next to the field at fault.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from tests.browser.page import KEY, XSS, Playground, ShownError
from tests.browser.screenshot import picture
from tests.integration.server import Server


def api(server: Server, body: dict[str, Any], key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{server.url}/v1/retrieve", json=body, headers=headers, timeout=30)


def api_error(server: Server, body: dict[str, Any]) -> ShownError:
    r = api(server, body)
    assert r.status_code == 422, r.text
    e = r.json()["error"]
    return ShownError(e["code"], e["message"], e["field"])


@pytest.fixture
def page(browser: webdriver.Chrome, server: Server) -> Playground:
    return Playground(browser, server.url).open()


def nothing_ran(page: Playground) -> None:
    """The markup sent back by the server stayed text: no element was made of it, no handler ran."""
    assert page.driver.title == "fastweights-serve playground"
    assert page.driver.find_elements(By.CSS_SELECTOR, "img") == []


# ----------------------------------------------------------------------------------------------- the page


def test_the_page_is_public_html_whose_csp_allows_this_origin_only(server: Server) -> None:
    r = httpx.get(server.url + "/", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    csp = dict(part.strip().split(" ", 1) for part in r.headers["content-security-policy"].split(";"))
    assert csp["default-src"] == "'none'"
    assert csp["script-src"] == "'self'"
    assert csp["connect-src"] == "'self'"
    assert "unsafe" not in r.headers["content-security-policy"]
    html = r.text
    assert re.search(r"<script(?![^>]*\bsrc=)", html) is None, "inline script"
    assert re.search(r"\son[a-z]+\s*=", html) is None, "inline event handler"
    links = re.findall(r'\b(?:src|href)="([^"]*)"', html)
    assert links and all(link.startswith("/") and not link.startswith("//") for link in links), links
    for asset, media in (
        ("/playground/playground.js", "text/javascript"),
        ("/playground/playground.css", "text/css"),
    ):
        a = httpx.get(server.url + asset, timeout=10)
        assert a.status_code == 200 and a.headers["content-type"].startswith(media)
        assert a.headers["x-content-type-options"] == "nosniff"
    assert httpx.get(server.url + "/playground/missing.js", timeout=10).status_code == 404


def test_the_csp_is_in_force_in_the_browser_inline_script_does_not_run(page: Playground) -> None:
    page.driver.execute_script(
        "const s = document.createElement('script'); s.textContent = 'document.title = \"inline ran\"';"
        "document.body.append(s);"
    )
    assert page.driver.title == "fastweights-serve playground"
    assert any("Content Security Policy" in e["message"] for e in page.driver.get_log("browser"))


def test_every_request_of_the_page_goes_to_its_origin_and_its_console_stays_clean(
    page: Playground, server: Server
) -> None:
    page.driver.get_log("browser")  # drop what earlier pages logged
    page.open()
    page.ask_sequence("c9k8??c")
    assert page.value() == "9"
    urls = page.driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert {u.split("?")[0].removeprefix(server.url) for u in urls} >= {
        "/playground/playground.css",
        "/playground/playground.js",
        "/v1/sessions",
        "/v1/retrieve",
    }
    assert all(u.startswith(server.url + "/") for u in urls), urls
    # Chromium asks for /favicon.ico by itself (the page has no icon): its 404 is the only message allowed
    logged = [
        e
        for e in page.driver.get_log("browser")
        if not (e["message"].startswith(f"{server.url}/favicon.ico ") and "404" in e["message"])
    ]
    assert logged == []


# -------------------------------------------------------------------------------------------- answering


def test_a_sequence_is_answered_with_its_value_and_one_attention_bar_per_pair_in_order(
    page: Playground, server: Server
) -> None:
    page.ask_sequence("c9k8j3f1??c")
    assert page.value() == "9"
    expected = api(server, {"sequence": "c9k8j3f1??c", "top_k": 3, "explain": True}).json()
    bars = page.bars()
    assert [b.pair for b in bars] == ["c9", "k8", "j3", "f1"]  # sequence order, not attention order
    by_pair = {e["key"] + e["value"]: e["weight"] for e in expected["explanation"]}
    assert [b.weight for b in bars] == [by_pair[b.pair] for b in bars]
    most = max(by_pair, key=by_pair.__getitem__)
    assert [b.pair for b in bars if b.retrieved] == [most] == ["c9"]
    assert [b.pair for b in bars if b.queried] == ["c9"]
    assert page.top_k() and len(page.top_k()) == 3 and page.top_k()[0].startswith("9")
    assert page.fact("model") == expected["model"] == "fastweights"
    assert page.fact("bucket") == expected["bucket"] == "fastweights_t11"
    assert page.fact("version") == expected["version"]
    assert re.fullmatch(r"\d+\.\d ms round trip", page.fact("latency"))
    assert page.shown_errors() == {}


def test_bars_follow_the_number_of_pairs_and_their_order(page: Playground) -> None:
    page.ask_sequence("a1b2c3d4e5f6g7h8??e")
    assert page.value() == "5"
    assert [b.pair for b in page.bars()] == ["a1", "b2", "c3", "d4", "e5", "f6", "g7", "h8"]
    assert page.fact("bucket") == "fastweights_t19"
    page.ask_sequence("q7??q")
    assert page.value() == "7"
    assert [b.pair for b in page.bars()] == ["q7"]


def test_pairs_typed_in_the_table_are_answered_and_a_key_chip_asks_that_key(page: Playground) -> None:
    page.use_table()
    # the sequence's pairs came over into the table
    rows = page.table_rows()
    assert [[c.get_attribute("value") for c in r.find_elements(By.CSS_SELECTOR, "input")] for r in rows] == [
        ["c", "9"],
        ["k", "8"],
        ["j", "3"],
        ["f", "1"],
    ]
    page.fill_table([("x", "4"), ("m", "0"), ("z", "7")], "m")
    page.ask()
    assert page.value() == "0"
    assert [b.pair for b in page.bars()] == ["x4", "m0", "z7"]
    chips = page.chips()
    assert [c.text for c in chips] == ["x", "m", "z"]
    page.click(chips[2], "ask-form")
    assert page.value() == "7"
    assert page.el("query").get_attribute("value") == "z"
    assert [b.pair for b in page.bars() if b.retrieved] == ["z7"]


# ----------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("mode", "fill", "request_body", "slot", "at_fault"),
    [
        ("sequence", "a1a2??a", {"sequence": "a1a2??a"}, "sequence", "sequence"),
        ("sequence", "c9k8??z", {"sequence": "c9k8??z"}, "sequence", "sequence"),
        ("sequence", "c9?k", {"sequence": "c9?k"}, "sequence", "sequence"),
        (
            "table",
            ([("c", "9"), ("k", "8")], "z"),
            {"pairs": [["c", "9"], ["k", "8"]], "query": "z"},
            "query",
            "query",
        ),
        (
            "table",
            ([("c", "9"), ("k", "x")], "c"),
            {"pairs": [["c", "9"], ["k", "x"]], "query": "c"},
            "pairs",
            "row 1",
        ),
        (
            "table",
            ([("c", "9"), ("c", "8")], "c"),
            {"pairs": [["c", "9"], ["c", "8"]], "query": "c"},
            "pairs",
            None,
        ),
        ("top_k", "c9k8??c", {"sequence": "c9k8??c", "top_k": 11}, "top_k", "top-k"),
    ],
    ids=[
        "duplicate key",
        "key not stored",
        "malformed",
        "table: unknown key",
        "table: bad value",
        "table: duplicate",
        "top_k too large",
    ],
)
def test_a_bad_input_shows_the_apis_error_next_to_the_field_at_fault(
    page: Playground,
    server: Server,
    mode: str,
    fill: Any,
    request_body: dict[str, Any],
    slot: str,
    at_fault: str | None,
) -> None:
    expected = api_error(server, {"top_k": 3, "explain": True, **request_body})
    if mode == "table":
        page.use_table()
        page.fill_table(*fill)
        page.ask()
    elif mode == "top_k":
        page.ask_sequence(fill, top_k=11)
    else:
        page.ask_sequence(fill)
    assert page.shown_errors() == {slot: expected}
    assert not page.el("result").is_displayed()
    if at_fault is not None:
        assert page.invalid_ids() == [at_fault]
    else:  # a duplicate's field is the whole "pairs": the table is marked
        assert page.invalid_ids() == ["pairs-table"]
    # fixing the input clears the error
    page.use_sequence()
    page.ask_sequence("c9k8??k")
    assert page.shown_errors() == {} and page.value() == "8" and page.invalid_ids() == []


def test_markup_in_an_error_message_is_shown_as_text_and_runs_nothing(
    page: Playground, server: Server
) -> None:
    page.use_table()
    page.fill_table([("c", "9"), ("k", "8")], XSS)
    page.ask()
    expected = api_error(
        server, {"pairs": [["c", "9"], ["k", "8"]], "query": XSS, "top_k": 3, "explain": True}
    )
    assert XSS in expected.message  # the API echoes it: the page must show it, as text
    assert page.shown_errors() == {"query": expected}
    nothing_ran(page)
    page.fill_table([(XSS, "9")], "c")
    page.ask()
    shown = page.shown_errors()
    assert list(shown) == ["pairs"] and XSS in shown["pairs"].message and shown["pairs"].field == "pairs[0]"
    nothing_ran(page)


# ---------------------------------------------------------------------------------------------- API key


def test_with_an_api_key_the_page_loads_and_answers_only_after_the_key_is_entered(
    browser: webdriver.Chrome, keyed_server: Server
) -> None:
    assert httpx.get(keyed_server.url + "/v1/sessions", timeout=10).status_code == 401
    page = Playground(browser, keyed_server.url).open()  # the page and its script load without the key
    assert (
        page.el("sessions-status").text
        == "Enter the API key to see whether this server keeps memory sessions."
    )
    page.ask_sequence("c9k8j3f1??c")
    shown = page.shown_errors()
    assert list(shown) == ["api-key"] and shown["api-key"].code == "unauthorized"
    assert page.invalid_ids() == ["api-key"] and not page.el("result").is_displayed()
    page.set_api_key(XSS)  # a key carrying markup: sent, refused, shown nowhere as markup
    page.ask()
    assert list(page.shown_errors()) == ["api-key"]
    nothing_ran(page)
    page.set_api_key(KEY)
    page.ask()
    assert page.shown_errors() == {} and page.value() == "9"
    assert len(page.bars()) == 4
    page.wait_idle("sessions-status")
    assert page.el("sessions-status").text == "Memory sessions are not available on this server."


def test_the_screenshot_tooling_writes_a_picture_of_the_answered_page(
    browser: webdriver.Chrome, server: Server, tmp_path: Path
) -> None:
    out = picture(browser, server.url, tmp_path / "playground.png")  # what `take` does with its own two
    png = out.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", png[16:24])
    assert width == 1100 and height > 600
