"""The web page at ``/``: its headers and files over HTTP, then the page itself in a real headless Chromium
(Debian's ``chromium`` and ``chromium-driver``, driven by Selenium) against the server under gunicorn,
relaying to the test upstream.

Screenshots of the main states go to a temporary folder; with ``KERNEL_WEB_SCREENSHOTS=1`` they are
written to ``docs/screenshots/`` instead (how the ones in the docs were made).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from kernel.web import STATIC_DIR, tree_version
from tests.conftest import spawn

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError:  # the HTTP tests still run; the browser fixture skips
    webdriver = None

ROOT = Path(__file__).resolve().parent.parent
ADMIN_KEY = "web-test-admin-key"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_S = 15


@pytest.fixture(scope="module")
def site(start_server, upstream, tmp_path_factory):
    return start_server(
        KERNEL_BACKEND="openai",
        KERNEL_UPSTREAM_URL=upstream.url,
        KERNEL_ADMIN_KEY=ADMIN_KEY,
        KERNEL_DATA_DIR=tmp_path_factory.mktemp("web-data"),
        KERNEL_SSE_PING_S=0.3,
        KERNEL_UPSTREAM_TIMEOUT_S=10,
    )


# -- over HTTP ---------------------------------------------------------------------------------------


def asset_urls(html):
    return re.findall(r'(?:src|href)="(/assets/[^"]+)"', html)


def test_page_and_assets_carry_the_security_headers(site):
    page = requests.get(site.url + "/", timeout=5)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    urls = asset_urls(page.text)
    assert {u.rsplit("/", 1)[1] for u in urls} == {"favicon.svg", "app.css", "app.js"}
    for response in [page] + [requests.get(site.url + u, timeout=5) for u in urls]:
        assert response.status_code == 200
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
    assert "<script>" not in page.text and re.search(r"\son[a-z]+=", page.text) is None  # no inline script
    # Only the page's blueprint sets them: the API is left as it was.
    assert "Content-Security-Policy" not in requests.get(site.url + "/healthz", timeout=5).headers


def test_caching_never_leaves_a_stale_script(site):
    page = requests.get(site.url + "/", timeout=5)
    assert page.headers["Cache-Control"] == "no-cache"
    again = requests.get(site.url + "/", headers={"If-None-Match": page.headers["ETag"]}, timeout=5)
    assert again.status_code == 304
    version = tree_version(STATIC_DIR)
    script = next(u for u in asset_urls(page.text) if u.endswith("app.js"))
    assert script == f"/assets/{version}/app.js"
    fresh = requests.get(site.url + script, timeout=5)
    assert fresh.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert fresh.headers["Content-Type"].split(";")[0] in ("text/javascript", "application/javascript")
    assert fresh.content == (STATIC_DIR / "app.js").read_bytes()
    # A page from before an upgrade asks for its old version: it gets today's file, revalidated each time.
    stale = requests.get(site.url + "/assets/0000000000000000/app.js", timeout=5)
    assert stale.status_code == 200 and stale.headers["Cache-Control"] == "no-cache"
    for missing in ("/assets/x/../__init__.py", f"/assets/{version}/index.html", f"/assets/{version}/nope.js"):
        assert requests.get(site.url + missing, timeout=5).status_code == 404


def test_the_version_follows_every_file(tmp_path):
    tree = tmp_path / "static"
    shutil.copytree(STATIC_DIR, tree)
    before = tree_version(tree)
    assert tree_version(tree) == before
    (tree / "vendor" / "marked.esm.js").write_text("changed")
    assert tree_version(tree) != before


def test_vendored_libraries_ship_with_their_licences():
    vendor = STATIC_DIR / "vendor"
    assert "Permission is hereby granted" in (vendor / "marked.LICENSE.txt").read_text()  # MIT
    assert "Apache License" in (vendor / "dompurify.LICENSE.txt").read_text()
    assert "Mozilla Public License" in (vendor / "dompurify.LICENSE-MPL.txt").read_text()
    for script in STATIC_DIR.rglob("*.js"):
        text = script.read_text()
        assert "eval(" not in text and "new Function" not in text, script


# -- in the browser ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    if webdriver is None:
        pytest.skip("needs selenium (requirements-dev.txt)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--window-size=1100,760", "--force-device-scale-factor=1", "--lang=en-US",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT_S)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    if os.environ.get("KERNEL_WEB_SCREENSHOTS") == "1":
        folder = ROOT / "docs" / "screenshots"
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    return tmp_path_factory.mktemp("screenshots")


class Page:
    """The page in the browser, with the few gestures the tests need."""

    def __init__(self, driver, site):
        self.driver, self.site, self.By, self.Keys = driver, site, By, Keys
        self.wait = WebDriverWait(driver, WAIT_S, poll_frequency=0.02)

    def open(self, fresh=True):
        self.driver.get_log("browser")  # what earlier tests left in the console log
        self.driver.get(self.site.url + "/")
        if fresh:
            self.driver.execute_script("localStorage.clear(); sessionStorage.clear();")
            self.driver.get(self.site.url + "/")
        self.wait.until(lambda d: d.execute_script("return document.documentElement.dataset.ready === 'true'"))
        return self

    def el(self, element_id):
        return self.driver.find_element(self.By.ID, element_id)

    def css(self, selector):
        return self.driver.find_elements(self.By.CSS_SELECTOR, selector)

    def fill(self, element_id, text):
        field = self.el(element_id)
        field.send_keys(self.Keys.CONTROL, "a")
        field.send_keys(self.Keys.DELETE)
        if text:
            field.send_keys(text)

    def send(self, text):
        self.fill("prompt", text)
        self.el("prompt").send_keys(self.Keys.ENTER)

    def texts(self, selector):
        """The text of each match, read in one go (streaming replaces elements as they are read)."""
        return self.driver.execute_script(
            "return [...document.querySelectorAll(arguments[0])].map(e => e.innerText.trim())", selector)

    def answers(self):
        return self.texts("article.message.assistant .body")

    def last_answer(self):
        answers = self.answers()
        return answers[-1] if answers else ""

    def idle(self):
        self.wait.until(lambda d: self.el("send").is_displayed() and not self.el("stop").is_displayed())

    def unlock(self):
        self.el("tab-manage").click()
        self.fill("admin-key", ADMIN_KEY)
        self.el("admin-key").send_keys(self.Keys.ENTER)
        self.wait.until(lambda d: self.el("manage").is_displayed())

    def severe_console(self, network=True):
        """Errors in the console: script errors, CSP refusals and, with ``network``, failed requests."""
        return [e for e in self.driver.get_log("browser")
                if e["level"] == "SEVERE" and (network or e["source"] != "network")]


@pytest.fixture
def page(browser, site):
    browser.set_window_size(1100, 760)
    return Page(browser, site).open()


def body_with_user(upstream, text):
    for body in reversed(upstream.stats.bodies):
        users = [m["content"] for m in body.get("messages", []) if m["role"] == "user"]
        if users and users[-1] == text:
            return body
    raise AssertionError(f"the upstream never received {text!r}")


def test_empty_page_loads_without_errors(page, shots):
    assert page.driver.title == "Kernel Chat"
    assert page.el("empty-hint").is_displayed()
    assert page.css("label[for=prompt]") and page.css("label[for=model]")  # fields have labels
    assert page.el("regenerate").get_attribute("disabled") and page.el("new-chat").get_attribute("disabled")
    # The models datalist is filled from /v1/models (the upstream's one model).
    page.wait.until(lambda d: page.css("#model-list option"))
    assert page.css("#model-list option")[0].get_attribute("value") == "upstream-model"
    page.driver.save_screenshot(str(shots / "empty.png"))
    assert page.severe_console() == []


def test_first_words_appear_before_the_last_is_generated(page, upstream, shots):
    page.fill("model", "slow:20:0.1")  # 20 deltas, 0.1 s apart
    completed = upstream.stats.completed
    page.send("count for me")
    page.wait.until(lambda d: "t1" in page.last_answer())
    assert upstream.stats.completed == completed, "the upstream finished before the page showed anything"
    assert "t19" not in page.last_answer()
    assert page.el("stop").is_displayed() and not page.el("send").is_displayed()
    assert page.css("article.message.assistant[aria-busy=true]")
    page.driver.save_screenshot(str(shots / "streaming.png"))
    page.idle()
    assert page.last_answer().split() == [f"t{i}" for i in range(20)]
    assert upstream.stats.completed == completed + 1
    assert page.css("article.message.user .body")[0].text == "count for me"


def test_stop_ends_the_request_and_the_upstream_sees_the_abort(page, upstream):
    page.fill("model", "slow:200:0.05")  # 10 s if nobody stops it
    aborted, completed = upstream.stats.aborted, upstream.stats.completed
    page.send("go on and on")
    page.wait.until(lambda d: "t2" in page.last_answer())
    page.el("stop").click()
    page.idle()
    assert upstream.stats.wait_for(lambda s: s.aborted > aborted, timeout=5), "the upstream never saw the abort"
    assert upstream.stats.completed == completed
    words = page.last_answer().split()
    assert "t2" in words and "t199" not in words  # what arrived stays on the page
    assert page.css("article.message.assistant .note")[-1].text == "Stopped."


def test_a_role_and_retrieval_change_what_is_sent(page, site, upstream):
    doc = requests.post(site.url + "/api/kernel2/documents", headers=AUTH, timeout=5,
                        json={"title": "Garden notes", "content": "The quince tree was planted by the north fence."})
    assert doc.status_code in (200, 201)
    role = requests.post(site.url + "/api/kernel2/roles", headers=AUTH, timeout=5,
                         json={"name": "Gardener", "system_prompt": "You are a patient gardener."}).json()

    # Without a role: the page's own system prompt, no passages.
    page.fill("system-prompt", "You are the page's assistant.")
    page.fill("model", "record-web")
    page.send("Where is the quince tree?")
    page.idle()
    plain = body_with_user(upstream, "Where is the quince tree?")
    assert plain["messages"][0] == {"role": "system", "content": "You are the page's assistant."}

    # Unlock (roles need the admin key), pick the role, switch retrieval on.
    page.unlock()
    page.el("tab-chat").click()
    page.wait.until(lambda d: len(page.css("#role option")) >= 2)
    Select(page.el("role")).select_by_value(role["role_id"])
    assert page.el("system-prompt").get_attribute("disabled")  # the role's prompt replaces the page's
    page.el("retrieval").click()
    page.send("Who planted the quince tree?")
    page.idle()
    sent = body_with_user(upstream, "Who planted the quince tree?")
    system = sent["messages"][0]
    assert system["role"] == "system"
    assert system["content"].startswith("You are a patient gardener.")
    assert "<reference_knowledge>" in system["content"] and "north fence" in system["content"]
    assert "page's assistant" not in json.dumps(sent)
    # The conversation so far went along: the first question and its answer.
    assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "user"]

    # The server names the documents retrieval drew on; the page shows them with the answer.
    assert page.texts("article.message.assistant .sources") == ["From your documents: “Garden notes”"]
    assert page.severe_console() == []


XSS = (
    "<img src=x onerror=\"document.title='pwned-img'\"> "
    "[click](javascript:document.title='pwned-link') "
    "<a href=\"javascript:document.title='pwned-a'\">raw</a> "
    "[entity](javascript&#58;document.title='pwned-entity') "
    "<script>document.title='pwned-script'</script> "
    "<svg><animate onbegin=\"document.title='pwned-svg'\" attributeName=x dur=1s></svg> **bold**"
)


def test_answers_with_html_and_javascript_links_stay_inert(page):
    page.driver.execute_script(
        "window.violations = [];"
        "document.addEventListener('securitypolicyviolation', e => window.violations.push([e.violatedDirective, e.sample, e.sourceFile, e.lineNumber].join(' ')));"
    )
    page.fill("model", "echo-xss")
    page.send(XSS)  # the echo scenario streams the message back as the answer
    page.idle()
    answer = page.css("article.message.assistant .body")[-1]
    assert answer.find_element(page.By.TAG_NAME, "strong").text == "bold"  # Markdown did render
    links = answer.find_elements(page.By.TAG_NAME, "a")
    assert [link.text for link in links] == ["click", "raw", "entity"]
    for link in links:
        assert link.get_attribute("href") is None  # the javascript: URL is gone
        link.click()
    html = answer.get_attribute("innerHTML").lower()
    assert "onerror" not in html and "<script" not in html and "onbegin" not in html
    assert "javascript:" not in html
    time.sleep(0.3)
    assert page.driver.title == "Kernel Chat"
    # The only CSP reports come from DOMPurify parsing the dirty HTML into an inert document (which runs
    # nothing); none from markup that reached the page.
    violations = page.driver.execute_script("return window.violations")
    assert all("/vendor/purify.es.js " in v for v in violations), violations
    # The person's own message is shown as text, not HTML.
    assert page.css("article.message.user .body")[-1].text == XSS


def test_a_reload_keeps_the_conversation_and_regenerate_replaces_the_answer(page, upstream):
    page.fill("model", "echo-reload")
    page.send("first question here")
    page.idle()
    page.send("second question here")
    page.idle()
    before = page.answers()
    assert before == ["first question here", "second question here"]
    page.open(fresh=False)
    assert page.answers() == before
    assert [u.text for u in page.css("article.message.user .body")] == ["first question here", "second question here"]
    assert page.el("model").get_attribute("value") == "echo-reload"  # settings stay too
    received = len(upstream.stats.bodies)
    page.el("regenerate").click()
    page.idle()
    assert len(upstream.stats.bodies) == received + 1
    assert body_with_user(upstream, "second question here")["messages"][-2] == {
        "role": "assistant", "content": "first question here"}
    assert page.answers() == before  # the same question again, one answer for it
    page.el("new-chat").click()
    assert page.answers() == [] and page.el("empty-hint").is_displayed()


def test_a_503_and_a_dropped_stream_read_as_sentences(page, shots):
    page.fill("model", "error:503")
    page.send("are you there?")
    page.wait.until(lambda d: page.css(".error-box"))
    box = page.css(".error-box")[-1]
    assert "The model is busy or unavailable right now. Try again in 1 s." in box.text
    assert "{" not in box.text and "success" not in box.text
    assert box.find_element(page.By.CSS_SELECTOR, "button.retry").is_displayed()
    page.driver.save_screenshot(str(shots / "error.png"))

    page.fill("model", "midfail:3")  # three deltas, then the upstream drops the connection
    page.el("regenerate").click()
    page.wait.until(lambda d: page.css(".error-box") and not page.el("stop").is_displayed())
    assert page.last_answer().split() == ["m0", "m1", "m2"]  # what arrived stays
    box = page.css(".error-box")[-1]
    assert "failed while answering" in box.text and "kept above" in box.text
    assert len(page.css("article.message.user")) == 1  # the retry did not repeat the question

    page.fill("model", "echo-retry")
    box.find_element(page.By.CSS_SELECTOR, "button.retry").click()
    page.idle()
    assert page.last_answer() == "are you there?" and not page.css(".error-box")


def test_role_editing_and_upload_in_the_manage_view(page, site, tmp_path, shots):
    page.el("tab-manage").click()
    page.fill("admin-key", "not-the-key")
    page.el("admin-key").send_keys(page.Keys.ENTER)
    page.wait.until(lambda d: page.el("key-error").is_displayed())
    assert page.el("key-error").text == "That key is not valid."
    assert page.driver.execute_script("return sessionStorage.length") == 0
    page.unlock()
    assert ADMIN_KEY not in page.driver.current_url
    assert page.driver.execute_script("return localStorage.getItem('kernel-chat.admin-key')") is None

    # Create a role.
    page.fill("role-name", "Archivist")
    page.fill("role-description", "Keeps the records")
    page.fill("role-prompt", "You keep careful records.")
    page.el("role-l0").click()
    page.el("role-save").click()
    page.wait.until(lambda d: any("Archivist" in t for t in page.texts("#role-list li")))
    stored = {r["name"]: r for r in requests.get(site.url + "/api/kernel2/roles", headers=AUTH, timeout=5).json()["data"]}
    assert stored["Archivist"]["system_prompt"] == "You keep careful records."
    assert stored["Archivist"]["enable_l0_retrieval"] is True

    # Edit it.
    item = next(li for li in page.css("#role-list li") if "Archivist" in li.text)
    item.find_element(page.By.XPATH, ".//button[text()='Edit']").click()
    assert page.el("role-name").get_attribute("value") == "Archivist"
    page.fill("role-prompt", "You keep very careful records.")
    page.el("role-save").click()
    page.wait.until(lambda d: any("very careful" in t for t in page.texts("#role-list li")))
    role_id = stored["Archivist"]["role_id"]
    again = requests.get(f"{site.url}/api/kernel2/roles/{role_id}", headers=AUTH, timeout=5).json()
    assert again["system_prompt"] == "You keep very careful records." and again["name"] == "Archivist"
    page.driver.save_screenshot(str(shots / "manage.png"))

    # A taken name is refused with the server's sentence.
    page.fill("role-name", "archivist")
    page.fill("role-prompt", "Another one.")
    page.el("role-save").click()
    page.wait.until(lambda d: page.el("manage-error").is_displayed())
    assert "already exists" in page.el("manage-error").text

    # Upload a Markdown file and a file of the wrong kind.
    notes = tmp_path / "cellar-notes.md"
    notes.write_text("# Cellar\n\nThe cider barrels are stacked against the east wall.\n")
    wrong = tmp_path / "photo.png"
    wrong.write_bytes(b"\x89PNG\r\n")
    page.el("tab-documents").click()
    page.el("doc-files").send_keys(f"{notes}\n{wrong}")
    page.el("doc-upload").click()
    page.wait.until(lambda d: len(page.css("#upload-list li.done, #upload-list li.failed")) == 2)
    done = page.css("#upload-list li.done")
    assert len(done) == 1 and "cellar-notes.md" in done[0].text and "added (1 chunk)" in done[0].text
    assert done[0].find_element(page.By.TAG_NAME, "progress").get_attribute("value") == "1"
    assert "not a text document" in page.css("#upload-list li.failed")[0].text
    page.wait.until(lambda d: any("cellar-notes" in t for t in page.texts("#doc-list li")))
    page.el("doc-files").send_keys(str(notes))  # the same content again is stored once
    page.el("doc-upload").click()
    page.wait.until(lambda d: len(page.css("#upload-list li.done")) == 2)
    assert "already there, as “cellar-notes”" in page.texts("#upload-list li.done")[0]
    listed = requests.get(site.url + "/api/kernel2/documents", headers=AUTH, timeout=5).json()["data"]
    doc = next(d for d in listed if d["title"] == "cellar-notes")
    assert requests.get(f"{site.url}/api/kernel2/documents/{doc['document_id']}", headers=AUTH,
                        timeout=5).json()["content"].startswith("# Cellar")

    # Delete the role: two presses.
    page.el("tab-roles").click()
    item = next(li for li in page.css("#role-list li") if "Archivist" in li.text)
    delete = item.find_element(page.By.XPATH, ".//button[text()='Delete']")
    delete.click()
    assert delete.text == "Really delete?"
    delete.click()
    page.wait.until(lambda d: not any("Archivist" in t for t in page.texts("#role-list li")))
    assert requests.get(f"{site.url}/api/kernel2/roles/{role_id}", headers=AUTH, timeout=5).status_code == 404
    assert page.severe_console(network=False) == []  # the refusals above are failed requests, not errors


def test_register_an_instance_and_watch_it_come_online(page, site, shots, tmp_path):
    page.unlock()
    page.wait.until(lambda d: page.el("tab-instances").is_displayed())
    page.el("tab-instances").click()
    page.fill("instance-name", "web-test-laptop")
    page.fill("instance-description", "The laptop under the stairs")
    page.el("instance-name").send_keys(page.Keys.ENTER)
    page.wait.until(lambda d: page.el("instance-created").is_displayed())
    secret = page.el("instance-secret").get_attribute("value")
    command = page.el("instance-command").get_attribute("value")
    assert secret and secret not in command
    page.wait.until(lambda d: any("web-test-laptop" in t for t in page.texts("#instance-list li")))
    assert "offline" in next(t for t in page.texts("#instance-list li") if "web-test-laptop" in t)

    # Run the command the page shows, with the secret it showed, and watch the status turn online.
    words = command.split()
    assert words[:4] == ["flask", "--app", "app", "connect"] and words[-2:] == ["--secret-file", "instance.secret"]
    assert words[words.index("--registry") + 1] == site.url
    (tmp_path / "instance.secret").write_text(secret + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERNEL_")}
    env.update(KERNEL_BACKEND="echo", KERNEL_DATA_DIR=str(tmp_path / "connector-data"))
    log = open(tmp_path / "connector.log", "wb")
    connector = spawn([sys.executable, "-m", *words[:-1], str(tmp_path / "instance.secret"), "--max-backoff", "1"],
                      cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        online = lambda d: any("web-test-laptop" in t and "online" in t for t in page.texts("#instance-list li"))
        WebDriverWait(page.driver, 20, poll_frequency=0.1).until(online)  # the list refreshes by itself
        page.driver.execute_script("document.getElementById('view-manage').scrollTop = 0")
        page.driver.save_screenshot(str(shots / "instances.png"))
    finally:
        connector.kill()
        connector.wait()
        log.close()


def test_a_phone_width_and_the_keyboard_alone(page, shots):
    page.fill("model", "echo-phone")
    page.driver.set_window_size(390, 760)
    page.open(fresh=False)  # at a phone's width the settings start folded away
    assert not page.el("model").is_displayed()
    prompt = page.el("prompt")
    prompt.click()
    prompt.send_keys("line one")
    prompt.send_keys(page.Keys.SHIFT, page.Keys.ENTER)
    prompt.send_keys("line two")
    assert prompt.get_attribute("value") == "line one\nline two"  # Shift+Enter: a new line, nothing sent
    assert page.css("article.message") == []
    prompt.send_keys(page.Keys.ENTER)
    page.idle()
    assert page.css("article.message.user .body")[0].text == "line one\nline two"
    assert page.last_answer() == "line one line two"
    width = page.driver.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], "the page scrolls sideways at a phone's width"
    # Dark follows the system's preference.
    background = "return getComputedStyle(document.body).backgroundColor"
    light = page.driver.execute_script(background)
    page.driver.execute_cdp_cmd("Emulation.setEmulatedMedia",
                                {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    try:
        assert page.driver.execute_script(background) == "rgb(17, 20, 24)" != light
        page.driver.save_screenshot(str(shots / "phone.png"))
    finally:
        page.driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    # Tab reaches the controls, and the focused one is visibly outlined.
    page.el("prompt").send_keys(page.Keys.TAB)
    outline = page.driver.execute_script(
        "const s = getComputedStyle(document.activeElement); return [document.activeElement.id, s.outlineStyle];")
    assert outline == ["send", "solid"]
