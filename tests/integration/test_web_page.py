"""The page `fundamentallm serve` shows at /, clicked and read in headless Chromium.

The browser tests need Debian's `chromium` and `chromium-driver` packages and the
`selenium` package; without them they are skipped (the page's own checks still run).
"""

from __future__ import annotations

import re
import shutil

import httpx
import pytest

from server_helpers import PROMPT, ServerProcess, tiny_checkpoint

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_text):
    served = ServerProcess(tiny_checkpoint(tmp_path_factory, tiny_text),
                           log=tmp_path_factory.mktemp("web") / "stderr.txt")
    yield served
    served.stop()


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    binary = next((path for path in map(shutil.which, BROWSERS) if path), None)
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        pytest.skip("Chromium or chromedriver is not installed (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--no-first-run", "--disable-extensions"):
        options.add_argument(flag)
    # Explicit paths: Selenium Manager would otherwise try to download a driver.
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def greedy(server: ServerProcess, prompt: str, max_tokens: int) -> str:
    response = httpx.post(f"{server.url}/generate", timeout=60,
                          json={"prompt": prompt, "temperature": 0, "max_tokens": max_tokens})
    assert response.status_code == 200, response.text
    return response.json()["samples"][0]["text"]


def fill(driver, element_id: str, value: str) -> None:
    element = driver.find_element("id", element_id)
    element.clear()
    element.send_keys(value)


def submit(driver, prompt: str, **fields: str):
    """Type the prompt and fields, click Generate (Send, in chat mode), wait for the end; the
    status element."""
    from selenium.webdriver.support.ui import WebDriverWait

    fill(driver, "prompt", prompt)
    for element_id, value in fields.items():
        fill(driver, element_id.replace("_", "-"), value)
    driver.find_element("id", "generate").click()
    status = driver.find_element("id", "status")
    WebDriverWait(driver, 60).until(lambda d: status.get_attribute("data-state") not in ("idle", "running"))
    return status


def run_page(driver, server: ServerProcess, prompt: str, **fields: str) -> tuple[str, str, str]:
    """Load the page, type the prompt and fields, click Generate, wait for the end;
    (status state, status text, output text)."""
    driver.get(server.url + "/")
    status = submit(driver, prompt, **fields)
    output = driver.find_element("id", "output").get_property("textContent")
    return status.get_attribute("data-state"), status.text, output


# ---------------------------------------------------------------- without a browser
def test_page_is_self_contained(server):
    response = httpx.get(server.url + "/", timeout=10)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = response.text
    for element_id in ("prompt", "max-tokens", "temperature", "generate", "output", "status"):
        assert f'id="{element_id}"' in page
    assert not re.search(r"https?://|<script[^>]+src=|<link|@import", page), "the page must work offline"
    assert "connect-src 'self'" in response.headers["content-security-policy"]


# ---------------------------------------------------------------- in Chromium
def test_click_generate_streams_the_greedy_text(browser, server):
    expected = greedy(server, PROMPT, 30)
    state, status, output = run_page(browser, server, PROMPT, temperature="0", max_tokens="30")
    assert state == "done", status
    assert output == expected
    assert "30 tokens" in status
    model = browser.find_element("id", "model").text
    assert "parameters" in model and "char tokenizer" in model  # filled in from /info


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory, tiny_text):
    served = ServerProcess(tiny_checkpoint(tmp_path_factory, tiny_text), "--api-key", "s3cret",
                           log=tmp_path_factory.mktemp("web-key") / "stderr.txt")
    yield served
    served.stop()


def test_with_an_api_key_the_page_asks_for_it_and_then_works(browser, keyed_server):
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(keyed_server.url + "/")
    key_row = browser.find_element("id", "key-row")
    WebDriverWait(browser, 30).until(lambda d: key_row.is_displayed())
    assert "needs its API key" in browser.find_element("id", "model").text
    fill(browser, "api-key", "wrong")
    browser.find_element("id", "prompt").click()  # leaving the field: the key is taken
    WebDriverWait(browser, 30).until(lambda d: "not this server's" in d.find_element("id", "model").text)
    fill(browser, "api-key", "s3cret")
    browser.find_element("id", "prompt").click()
    WebDriverWait(browser, 30).until(lambda d: "parameters" in d.find_element("id", "model").text)
    expected = httpx.post(f"{keyed_server.url}/generate", timeout=60, headers={"Authorization": "Bearer s3cret"},
                          json={"prompt": PROMPT, "temperature": 0, "max_tokens": 20}).json()["samples"][0]["text"]
    status = submit(browser, PROMPT, temperature="0", max_tokens="20")
    assert status.get_attribute("data-state") == "done", status.text
    assert browser.find_element("id", "output").get_property("textContent") == expected


def test_stop_field_and_errors_are_shown(browser, server):
    expected = greedy(server, PROMPT, 40)
    # two visible characters (an <input> cannot take a newline), first found past the start
    stop = next(expected[i:i + 2] for i in range(10, len(expected) - 1)
                if not any(c.isspace() or c == "\\" for c in expected[i:i + 2]))
    state, status, output = run_page(browser, server, PROMPT, temperature="0", max_tokens="40", stop=stop)
    assert state == "done" and "stop string" in status
    assert output == expected[:expected.find(stop)]
    state, status, output = run_page(browser, server, PROMPT, temperature="-1", max_tokens="5")
    assert state == "error" and "422" in status and "temperature" in status and output == ""


# ---------------------------------------------------------------- chat mode
@pytest.fixture(scope="module")
def chat_server(tmp_path_factory, tiny_text):
    """A model fine-tuned on conversations (briefly: its replies need only be deterministic)."""
    import json

    from integration_helpers import train

    root = tmp_path_factory.mktemp("web-chat")
    words = tiny_text.split()[:400]
    (root / "chats.jsonl").write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": f"Say {word}"}, {"role": "assistant", "content": word}]}) + "\n" for word in words))
    out = train(root / "chats.jsonl", root / "run", "--format", "chat", max_steps=30, context_length=32)
    served = ServerProcess(out / "final.pt", log=root / "stderr.txt")
    yield served
    served.stop()


def chat_reply(server: ServerProcess, messages: list[dict]) -> str:
    model = httpx.get(f"{server.url}/info", timeout=10).json()["model_id"]
    response = httpx.post(f"{server.url}/v1/chat/completions", timeout=60,
                          json={"model": model, "messages": messages, "temperature": 0, "max_tokens": 12})
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"]


def test_a_chat_model_opens_in_chat_mode_and_keeps_the_conversation(browser, chat_server):
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(chat_server.url + "/")
    WebDriverWait(browser, 30).until(lambda d: d.find_element("id", "mode-chat").is_selected())
    assert not browser.find_element("id", "chat-part").get_attribute("hidden")
    sent = []
    for message in ("Say ROMEO", "Say again"):
        status = submit(browser, message, temperature="0", max_tokens="12")
        assert status.get_attribute("data-state") == "done", status.text
        expected = chat_reply(chat_server, [*sent, {"role": "user", "content": message}])
        replies = browser.find_elements("css selector", ".turn.assistant .content")
        assert replies[-1].get_property("textContent") == expected  # the earlier turns sent along
        sent += [{"role": "user", "content": message}, {"role": "assistant", "content": expected}]
    assert len(browser.find_elements("css selector", ".turn")) == 4
    browser.find_element("id", "new-chat").click()
    assert not browser.find_elements("css selector", ".turn")
