"""The web page in a real headless browser (Debian's chromium driven by Selenium through
chromium-driver): a question on the embedded model fills one card per budget and the curve;
answer-now on a long thinking; model output shown as text, never run as HTML. Skipped where
chromium or its driver is not installed (.ci/run installs both)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from anytime_reasoner.config import ServeConfig, build_config
from anytime_reasoner.data.codec import TokenizerCodec
from anytime_reasoner.models.loading import load_tokenizer
from anytime_reasoner.serve.app import ServerState
from anytime_reasoner.serve.cli import background_server
from tests.serve.conftest import serving
from tests.serve.scripted import ScriptedBackend

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
SCREENSHOT = os.environ.get("ANYTIME_REASONER_SCREENSHOT")  # write the page's screenshot here (docs/serve_page.png)


@pytest.fixture
def browser():
    if not (CHROMIUM and DRIVER):
        pytest.skip("needs chromium and chromedriver (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


def _wait(driver, script: str, seconds: float = 30.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds, poll_frequency=0.05).until(lambda d: d.execute_script(script))


def _ask(driver, url: str, budgets: str) -> None:
    driver.get(url + "/")
    field = driver.find_element("id", "budgets")
    field.clear()
    field.send_keys(budgets)
    driver.find_element("id", "ask").click()


def test_a_question_fills_a_card_per_budget_and_the_curve(embedded, browser):
    url, _ = embedded
    _ask(browser, url, "12:60:12")
    _wait(browser, "return document.querySelectorAll('.card.filled').length === 5")
    _wait(browser, "return document.getElementById('status').textContent.startsWith('done')")
    cards = browser.execute_script(
        "return [...document.querySelectorAll('.card')].map(c => [c.querySelector('.budget').textContent, "
        "c.querySelector('.answer').textContent, c.querySelector('.meta').textContent])"
    )
    assert [c[0] for c in cards] == [f"budget {b}" for b in (12, 24, 36, 48, 60)]
    assert cards[-1][1] == "45" and "thinking done" in cards[-1][2]  # the embedded model answers the question
    assert browser.find_element("id", "thinking").text.startswith("a=45")
    assert browser.execute_script("return document.querySelectorAll('#curve circle').length") == 5
    if SCREENSHOT:
        Path(SCREENSHOT).parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(SCREENSHOT)


def test_answer_now_shows_the_answer_at_the_cut(random_model, browser):
    with serving(random_model, "summary_max_tokens=8") as (url, _):
        _ask(browser, url, "2000,3000")
        _wait(browser, "return document.getElementById('thinking').textContent.length > 30")
        browser.find_element("id", "stop").click()  # ... and stop thinking
        browser.find_element("id", "now").click()
        _wait(browser, "return document.querySelectorAll('.card.now').length === 1")
        _wait(browser, "return document.querySelectorAll('.card.filled').length === 2")  # both budgets, at the cut
        label = browser.execute_script("return document.querySelector('.card.now .budget').textContent")
        assert label.startswith("answer now @ ")


def test_model_output_is_shown_as_text_never_run(random_model, browser):
    tokenizer = load_tokenizer(random_model)
    cfg = build_config(ServeConfig, overrides=[f"model={random_model}", "served_model_name=tiny", "summary_max_tokens=64"])
    codec = TokenizerCodec.for_protocol(tokenizer, cfg.protocol())
    thinking = codec.encode("<script>window.pwned = 1</script>") + [codec.think_end_id]
    summary = codec.encode('\\boxed{<img src=x onerror="window.pwned = 2">}') + [codec.eos_id]

    def script(prompt, sampling):
        return thinking if codec.think_end_id in sampling.stop_ids else summary

    state = ServerState(cfg, ScriptedBackend(script, chunk=4), codec, context=4096)
    with background_server(state) as url:
        _ask(browser, url, "500")
        _wait(browser, "return document.querySelectorAll('.card.filled').length === 1")
        assert browser.execute_script("return window.pwned === undefined")
        assert browser.find_element("id", "thinking").text == "<script>window.pwned = 1</script>"
        shown = browser.execute_script("return document.querySelector('.card .answer').textContent")
        assert shown == '<img src=x onerror="window.pwned = 2">'
        assert browser.execute_script("return document.querySelectorAll('.card img, #thinking script').length") == 0
