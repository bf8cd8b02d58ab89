"""The playground's memory-session panel, in a real headless Chromium.

Against the session API's agreed shape, served by `sessions_standin` in front of the real server (answers
computed by the real model), with and without sessions; see that module for what it is and is not.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from tests.browser.page import Playground
from tests.browser.sessions_standin import SessionsStandIn, serve_standin
from tests.browser.test_playground import XSS, nothing_ran
from tests.integration.server import Server


@pytest.fixture(scope="module")
def standin(server: Server) -> Iterator[tuple[str, SessionsStandIn]]:
    with serve_standin(server.url, sessions=True) as s:
        yield s


@pytest.fixture
def page(browser: webdriver.Chrome, standin: tuple[str, SessionsStandIn]) -> Playground:
    return Playground(browser, standin[0]).open()


def append(page: Playground, pair: str) -> None:
    page.type_into(page.el("session-pair"), pair)
    page.click(page.el("session-append"), "session-panel")


def history(page: Playground) -> list[str]:
    return [
        li.find_element(By.CSS_SELECTOR, ".step").text
        for li in page.driver.find_elements(By.CSS_SELECTOR, "#session-history li")
    ]


def test_without_sessions_the_page_says_they_are_not_available(
    browser: webdriver.Chrome, server: Server
) -> None:
    with serve_standin(server.url, sessions=False) as (url, app):
        page = Playground(browser, url).open()
        assert page.el("sessions-status").text == "Memory sessions are not available on this server."
        assert not page.el("session-panel").is_displayed()
        assert app.calls == [("GET", "/v1/sessions")]
        page.ask_sequence("c9k8??k")  # the rest of the page works as ever
        assert page.value() == "8"


def test_pairs_appended_one_at_a_time_are_watched_as_the_memory_fills(
    page: Playground, standin: tuple[str, SessionsStandIn]
) -> None:
    _, app = standin
    assert page.el("sessions-status").text == (
        "This server keeps memory sessions: up to 12 pairs each, idle ones expire after 600 s."
    )
    assert page.el("session-pair").get_attribute("disabled") is not None  # no session yet
    page.click(page.el("session-new"), "session-panel")
    (sid,) = app.store
    assert page.el("session-info").text.startswith(f"session {sid} · 0 pairs")
    for n, pair in enumerate(["c9", "k8", "j3", "f1"], start=1):
        append(page, pair)
        assert page.shown_errors() == {}
        # the watched key (the first appended) is asked again after every append
        assert page.value("session-answer") == "9"
        assert [b.pair for b in page.bars("session-answer")] == ["c9", "k8", "j3", "f1"][:n]
        assert page.el("session-info").text.startswith(f"session {sid} · {n} pairs")
    assert app.store[sid] == {"pairs": [["c", "9"], ["k", "8"], ["j", "3"], ["f", "1"]], "next_seq": 4}
    assert history(page) == [f"{n} pairs, c → 9" for n in (4, 3, 2, 1)]
    mini = page.driver.find_elements(By.CSS_SELECTOR, "#session-history li:first-child .bar")
    assert len(mini) == 4
    page.type_into(page.el("session-query"), "j")
    page.click(page.el("session-ask"), "session-panel")
    assert page.value("session-answer") == "3"
    assert [b.pair for b in page.bars("session-answer") if b.queried] == ["j3"]


def test_session_errors_are_shown_at_their_field_as_text(
    page: Playground, standin: tuple[str, SessionsStandIn]
) -> None:
    _, app = standin
    page.click(page.el("session-new"), "session-panel")
    sid = max(app.store, key=lambda s: int(s[1:]))
    append(page, "c9")
    append(page, "c5")
    shown = page.shown_errors()
    assert list(shown) == ["session-pair"]
    assert (shown["session-pair"].code, shown["session-pair"].field) == ("duplicate_key", "pairs[0]")
    assert shown["session-pair"].message == "key 'c' is already in the session"
    page.type_into(page.el("session-query"), XSS)  # the real server's message echoes it
    page.click(page.el("session-ask"), "session-panel")
    shown = page.shown_errors()
    assert list(shown) == ["session-query"] and shown["session-query"].field == "query"
    assert XSS in shown["session-query"].message
    nothing_ran(page)
    page.type_into(page.el("session-query"), "c")
    # another client appended meanwhile: 409, shown, and the page takes the server's sequence number
    app.store[sid]["next_seq"] += 1
    append(page, "k8")
    shown = page.shown_errors()
    assert list(shown) == ["session-pair"] and shown["session-pair"].code == "sequence_mismatch"
    append(page, "k8")
    assert page.shown_errors() == {} and app.store[sid]["pairs"] == [["c", "9"], ["k", "8"]]
    # the session went away on the server: the panel says so and closes it
    del app.store[sid]
    page.click(page.el("session-ask"), "session-panel")
    assert page.shown_errors()["session"].code == "session_not_found"
    assert page.el("session-append").get_attribute("disabled") is not None


def test_deleting_the_session_removes_it_on_the_server(
    page: Playground, standin: tuple[str, SessionsStandIn]
) -> None:
    _, app = standin
    page.click(page.el("session-new"), "session-panel")
    sid = max(app.store, key=lambda s: int(s[1:]))
    append(page, "a1")
    page.click(page.el("session-delete"), "session-panel")
    assert sid not in app.store
    assert ("DELETE", f"/v1/sessions/{sid}") in app.calls
    assert page.el("session-info").text == "" and history(page) == []
    assert page.el("session-append").get_attribute("disabled") is not None
