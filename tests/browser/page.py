"""The playground page as the browser tests (and the README screenshot) use it: fill, ask, read back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

TIMEOUT_S = 20
KEY = "playground-key"  # the API key of the tests' keyed server
XSS = '<img src=x onerror="document.title=document.domain">'  # no quote that repr() would escape


@dataclass(frozen=True)
class Bar:
    pair: str  # "c9"
    weight: float
    retrieved: bool
    queried: bool


@dataclass(frozen=True)
class ShownError:
    code: str
    message: str
    field: str | None


class Playground:
    def __init__(self, driver: webdriver.Chrome, url: str):
        self.driver = driver
        self.url = url

    # -------------------------------------------------------------------------------------------- moving

    def open(self) -> Playground:
        self.driver.get(self.url + "/")
        self.wait(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")
        self.wait_idle("sessions-status")
        return self

    def wait(self, condition: Callable[[webdriver.Chrome], object]) -> None:
        WebDriverWait(self.driver, TIMEOUT_S).until(condition)

    def wait_idle(self, element_id: str) -> None:
        self.wait(lambda d: d.find_element(By.ID, element_id).get_attribute("aria-busy") is None)

    def el(self, element_id: str) -> WebElement:
        return self.driver.find_element(By.ID, element_id)

    def type_into(self, element: WebElement, text: str) -> None:
        element.clear()
        if text:
            element.send_keys(text)

    def click(self, element: WebElement, busy_id: str) -> None:
        element.click()
        self.wait_idle(busy_id)

    # ----------------------------------------------------------------------------------------- the form

    def set_api_key(self, key: str) -> None:
        self.type_into(self.el("api-key"), key)

    def use_table(self) -> None:
        self.driver.find_element(By.CSS_SELECTOR, 'input[name="mode"][value="table"]').click()

    def use_sequence(self) -> None:
        self.driver.find_element(By.CSS_SELECTOR, 'input[name="mode"][value="sequence"]').click()

    def ask_sequence(self, sequence: str, top_k: int | str = 3) -> None:
        self.type_into(self.el("sequence"), sequence)
        self.ask(top_k)

    def table_rows(self) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, "#pairs-body tr")

    def fill_table(self, pairs: list[tuple[str, str]], query: str) -> None:
        for row in self.table_rows():
            row.find_element(By.CSS_SELECTOR, ".remove").click()
        for key, value in pairs:
            self.el("add-pair").click()
            row = self.table_rows()[-1]
            self.type_into(row.find_element(By.CSS_SELECTOR, ".pair-key"), key)
            self.type_into(row.find_element(By.CSS_SELECTOR, ".pair-value"), value)
        self.type_into(self.el("query"), query)

    def ask(self, top_k: int | str = 3) -> None:
        self.type_into(self.el("top-k"), str(top_k))
        self.click(self.el("ask"), "ask-form")

    def chips(self) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, "#key-chips .chip")

    # ------------------------------------------------------------------------------------------ reading

    def answered(self, container: str = "answer") -> bool:
        return bool(self.driver.find_elements(By.CSS_SELECTOR, f"#{container} .value"))

    def value(self, container: str = "answer") -> str:
        return self.driver.find_element(By.CSS_SELECTOR, f"#{container} .value").text

    def bars(self, container: str = "answer") -> list[Bar]:
        out = []
        for bar in self.driver.find_elements(By.CSS_SELECTOR, f"#{container} > .bars .bar"):
            classes = (bar.get_attribute("class") or "").split()
            out.append(
                Bar(
                    bar.find_element(By.CSS_SELECTOR, ".pair").text,
                    float(bar.get_attribute("data-weight") or "nan"),
                    "retrieved" in classes,
                    "queried" in classes,
                )
            )
        return out

    def fact(self, name: str, container: str = "answer") -> str:
        return self.driver.find_element(By.CSS_SELECTOR, f'#{container} dd[data-fact="{name}"]').text

    def top_k(self, container: str = "answer") -> list[str]:
        return [li.text for li in self.driver.find_elements(By.CSS_SELECTOR, f"#{container} .top-k li")]

    def error(self, slot: str) -> ShownError | None:
        """The error shown in the slot next to `slot` (None when it is hidden)."""
        element = self.driver.find_element(By.CSS_SELECTOR, f'[data-error-for="{slot}"]')
        if not element.is_displayed():
            return None
        fields = element.find_elements(By.CSS_SELECTOR, ".field")
        return ShownError(
            element.find_element(By.CSS_SELECTOR, ".code").text,
            element.find_element(By.CSS_SELECTOR, ".message").text,
            fields[0].text.removeprefix("field: ") if fields else None,
        )

    def shown_errors(self) -> dict[str, ShownError]:
        slots = self.driver.find_elements(By.CSS_SELECTOR, "[data-error-for]")
        out = {}
        for slot in slots:
            name = slot.get_attribute("data-error-for") or ""
            shown = self.error(name)
            if shown is not None:
                out[name] = shown
        return out

    def invalid_ids(self) -> list[str]:
        """What the page marked as at fault (`aria-invalid`): element ids, or "row N" for a table row."""
        out = []
        for el in self.driver.find_elements(By.CSS_SELECTOR, '[aria-invalid="true"]'):
            if el.tag_name == "tr":
                out.append(f"row {self.table_rows().index(el)}")
            else:
                out.append(el.get_attribute("id") or el.tag_name)
        return out
