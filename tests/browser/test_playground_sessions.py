"""The playground's memory-session panel, in a real headless Chromium, against real servers: one serving the
bundled repository's sessions (its stream model), one with FWS_SESSIONS=false."""

from __future__ import annotations

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from tests.browser.page import KEY, XSS, Playground, ShownError
from tests.browser.test_playground import nothing_ran
from tests.integration.server import Server


def append(page: Playground, pair: str) -> None:
    page.type_into(page.el("session-pair"), pair)
    page.click(page.el("session-append"), "session-panel")


def history(page: Playground) -> list[str]:
    steps = page.driver.find_elements(By.CSS_SELECTOR, "#session-history li .step")
    return [step.text for step in steps]


def test_without_sessions_the_page_says_they_are_not_available(
    browser: webdriver.Chrome, keyed_server: Server
) -> None:
    """keyed_server runs with FWS_SESSIONS=false (and an API key: the answer comes once the key is typed)."""
    headers = {"Authorization": f"Bearer {KEY}"}
    assert httpx.get(keyed_server.url + "/v1/sessions", headers=headers, timeout=10).status_code == 404
    page = Playground(browser, keyed_server.url).open()
    assert page.el("sessions-status").text.startswith("Enter the API key")
    page.set_api_key(KEY)
    page.ask_sequence("c9k8??k")  # leaving the key field, and an answer, both look again
    page.wait_idle("sessions-status")
    assert page.el("sessions-status").text == "Memory sessions are not available on this server."
    assert not page.el("session-panel").is_displayed()
    assert page.value() == "8"


# -------------------------------------------------------------------------------- the real session API


@pytest.fixture
def real_page(browser: webdriver.Chrome, server: Server) -> Playground:
    status = httpx.get(server.url + "/v1/sessions", timeout=10)
    assert status.status_code == 200, (
        f"the bundled repository serves sessions (its stream model): {status.text}"
    )
    return Playground(browser, server.url).open()


def session_id(page: Playground) -> str:
    sid = page.el("session-info").get_attribute("data-session-id")
    assert sid
    return sid


def test_a_real_session_fills_one_pair_at_a_time_and_the_page_draws_what_the_api_answers(
    real_page: Playground, server: Server
) -> None:
    page = real_page
    limits = httpx.get(server.url + "/v1/sessions", timeout=10).json()["limits"]
    assert page.el("sessions-status").text == (
        f"This server keeps memory sessions: up to {limits['max_pairs']} pairs each, "
        f"idle ones expire after {limits['idle_ttl_s']:g} s."
    )
    page.click(page.el("session-new"), "session-panel")
    sid = session_id(page)
    pairs = ["c9", "k8", "j3", "f1", "a5", "b6"]
    for n, pair in enumerate(pairs, start=1):
        append(page, pair)
        assert page.shown_errors() == {}
        expected = httpx.post(
            f"{server.url}/v1/sessions/{sid}/query",
            json={"query": "c", "top_k": 3, "explain": True},
            timeout=10,
        ).json()
        assert page.value("session-answer") == expected["value"] == "9"
        bars = page.bars("session-answer")
        assert [b.pair for b in bars] == pairs[:n]
        by_pair = {e["key"] + e["value"]: e["weight"] for e in expected["explanation"]}
        assert [b.weight for b in bars] == [by_pair[b.pair] for b in bars]
        assert page.fact("bucket", "session-answer") == expected["bucket"]
    info = httpx.get(f"{server.url}/v1/sessions/{sid}", timeout=10).json()
    assert info["pairs"] == [list(p) for p in pairs] and info["next_seq"] == len(pairs)
    assert history(page) == [f"{n} pairs, c → 9" for n in range(len(pairs), 1, -1)] + ["1 pair, c → 9"]
    page.click(page.el("session-delete"), "session-panel")
    assert httpx.get(f"{server.url}/v1/sessions/{sid}", timeout=10).status_code == 404


def test_a_real_sessions_errors_are_shown_as_the_api_words_them(
    real_page: Playground, server: Server
) -> None:
    page = real_page
    page.click(page.el("session-new"), "session-panel")
    sid = session_id(page)
    append(page, "c9")
    append(page, "c5")
    again = httpx.post(
        f"{server.url}/v1/sessions/{sid}/pairs", json={"pairs": [["c", "5"]], "seq": 1}, timeout=10
    )
    assert again.status_code == 422
    e = again.json()["error"]
    assert page.shown_errors() == {"session-pair": ShownError(e["code"], e["message"], e["field"])}
    assert page.invalid_ids() == ["session-pair"]
    page.type_into(page.el("session-query"), XSS)
    page.click(page.el("session-ask"), "session-panel")
    shown = page.shown_errors()
    assert list(shown) == ["session-query"] and XSS in shown["session-query"].message
    nothing_ran(page)
    page.type_into(page.el("session-query"), "c")
    # another client appends meanwhile: the page's next append is a 409, shown; the one after goes through
    other = httpx.post(
        f"{server.url}/v1/sessions/{sid}/pairs", json={"pairs": [["z", "0"]], "seq": 1}, timeout=10
    )
    assert other.status_code == 200, other.text
    append(page, "k8")
    shown = page.shown_errors()
    assert list(shown) == ["session-pair"] and shown["session-pair"].code == "sequence_mismatch"
    append(page, "k8")
    assert page.shown_errors() == {} and page.value("session-answer") == "9"
    pairs = httpx.get(f"{server.url}/v1/sessions/{sid}", timeout=10).json()["pairs"]
    assert pairs == [["c", "9"], ["z", "0"], ["k", "8"]]
    assert [b.pair for b in page.bars("session-answer")] == ["c9", "z0", "k8"]
    # gone on the server: the page says so and closes the session
    assert httpx.delete(f"{server.url}/v1/sessions/{sid}", timeout=10).status_code == 204
    page.click(page.el("session-ask"), "session-panel")
    shown = page.shown_errors()
    assert list(shown) == ["session"] and shown["session"].code == "session_not_found"
    assert page.el("session-append").get_attribute("disabled") is not None
