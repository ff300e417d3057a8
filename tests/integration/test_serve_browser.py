"""The chat page at ``/`` in headless Chromium (Debian's package, driven by playwright): enter the API key,
attach an image, send, see the streamed answer (equal to the pipeline's), multi-turn, and the stop button.

The set-up installs Debian's ``chromium`` with apt-get when it is missing (CI machines are fresh); the
test skips, saying why, only when that is impossible. A screenshot is saved under ``test-artifacts/``
(or ``$INTERNVL_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from internvl.data.synthetic import synthetic_image
from internvl.inference.requests import ChatRequest, GenerationOptions
from tests.integration.serve_support import data_url, httpx, running_server, tiny_chat_pipeline

sync_api = pytest.importorskip("playwright.sync_api")
from internvl.serving.app import ServeSettings, create_app  # noqa: E402
from internvl.serving.schemas import Limits  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
KEY = "browser-key"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def chromium_path() -> str:
    """Debian's chromium, installed with apt-get when missing (never playwright's own download)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip("chromium is not installed and cannot be installed here (needs apt-get as root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(["apt-get", "update"], check=True, capture_output=True, env=env, timeout=300)
        subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
            check=True,
            capture_output=True,
            env=env,
            timeout=600,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"apt-get could not install chromium: {getattr(e, 'stderr', b'')[-300:]!r}")
    found = shutil.which("chromium")
    if not found:
        pytest.skip("apt-get ran but no chromium binary appeared")
    return found


def test_chat_page_streams_answers_and_stops(tmp_path):
    executable = chromium_path()
    pipe = tiny_chat_pipeline(tmp_path / "tok")
    image = synthetic_image(7, size=96)
    image_file = tmp_path / "shapes.png"
    image.save(image_file)
    expected = pipe.answer(
        ChatRequest(
            "what is in the image?", images=(image,), options=GenerationOptions(max_new_tokens=12, do_sample=False)
        )
    ).text
    artifacts = Path(os.environ.get("INTERNVL_TEST_ARTIFACTS", REPO / "test-artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    settings = ServeSettings(model_name="tiny-chat", api_key=KEY, limits=Limits(max_tokens=100_000))
    with running_server(create_app(pipe, settings)) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 760})
            page.goto(url + "/")
            expect = sync_api.expect
            expect(page.locator("#model")).to_contain_text("model unavailable")  # no key yet: 401
            page.fill("#api_key", KEY)
            page.locator("#api_key").dispatch_event("change")
            expect(page.locator("#model")).to_have_text("model: tiny-chat")

            page.set_input_files("#file", str(image_file))
            expect(page.locator(".thumb img")).to_have_count(1)
            # Pasting an image adds it; its x button removes it again.
            page.evaluate(
                """async (url) => {
                const blob = await (await fetch(url)).blob();
                const dt = new DataTransfer();
                dt.items.add(new File([blob], "pasted.png", {type: "image/png"}));
                document.dispatchEvent(new ClipboardEvent("paste", {clipboardData: dt}));
            }""",
                data_url(3),
            )
            expect(page.locator(".thumb img")).to_have_count(2)
            page.locator(".thumb button").nth(1).click()
            expect(page.locator(".thumb img")).to_have_count(1)
            page.fill("#max_tokens", "12")
            page.fill("#prompt", "what is in the image?")
            page.click("#send")
            answer = page.locator(".msg.assistant .text").last
            expect(answer).to_have_text(expected, timeout=30_000)
            expect(page.locator(".msg.user img")).to_have_count(1)
            expect(page.locator("#send")).to_be_enabled()
            expect(page.locator(".msg.assistant .note").last).to_have_text("cut at max tokens")

            # Second turn, long answer: text streams in, then the stop button cancels it on the server.
            page.fill("#max_tokens", "50000")
            page.fill("#prompt", "tell me more")
            page.click("#send")
            second = page.locator(".msg.assistant .text").nth(1)
            expect(page.locator("#stopbtn")).to_be_enabled()
            page.wait_for_function(
                "document.querySelectorAll('.msg.assistant .text')[1].textContent.length > 40", timeout=30_000
            )
            page.screenshot(path=str(artifacts / "serve_chat_page_streaming.png"))
            page.click("#stopbtn")
            expect(page.locator(".msg.assistant .note").nth(1)).to_have_text("stopped")
            expect(page.locator("#status")).to_have_text("stopped")
            stopped_text = second.text_content()
            assert stopped_text and len(stopped_text) > 40
            page.wait_for_timeout(500)
            assert second.text_content() == stopped_text  # nothing arrives after stop
            metrics = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
            assert "internvl_cancelled_total 1.0" in metrics

            # The worker is free again: a third turn answers at once.
            page.fill("#max_tokens", "6")
            page.fill("#system", "Be brief.")
            page.fill("#prompt", "thanks")
            page.click("#send")
            expect(page.locator(".msg.assistant .note").nth(2)).to_have_text("cut at max tokens", timeout=30_000)
            assert page.locator(".msg.assistant .text").nth(2).text_content()
            page.screenshot(path=str(artifacts / "serve_chat_page.png"))
        finally:
            browser.close()
