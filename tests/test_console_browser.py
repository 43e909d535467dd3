"""The review console in a real headless Chromium (Debian's package, driven by Playwright for Python).

The service runs in-process (uvicorn on a free port, tiny bundle, SQLite store in tmp); the browser
routes examples/angry_buyer.json, reviews the queue with the keyboard, and the feedback rows are read
back from the database. Skipped when Playwright or /usr/bin/chromium is missing, except in CI (CI=true),
where that is a failure: .ci/run installs both.
"""

from __future__ import annotations

import importlib.util
import json
import os
import struct
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
ROOT = Path(__file__).resolve().parent.parent
ANGRY = json.loads((ROOT / "examples" / "angry_buyer.json").read_text(encoding="utf-8"))


def _helpers():
    spec = importlib.util.spec_from_file_location("console_screenshots", ROOT / "scripts" / "console_screenshots.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


shots = _helpers()


@pytest.fixture(scope="module")
def browser():
    reason = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "playwright is not installed (pip install -e '.[dev]')"
    if reason is None and not Path(shots.CHROMIUM).exists():
        reason = f"no Chromium at {shots.CHROMIUM} (apt-get install chromium, or set KEFU_CHROMIUM)"
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must run the console's browser tests: {reason}")
        pytest.skip(reason)
    playwright = sync_playwright().start()
    chromium = shots.launch(playwright)
    yield chromium
    chromium.close()
    playwright.stop()


@pytest.fixture
def db(tmp_path) -> str:
    return str(tmp_path / "console.db")


def start(bundle, db, **overrides):
    from kefu_router.serve.settings import Settings

    return shots.serve(Settings(model=bundle, db=db, store_text=True, log_interval_ms=20, threads=1, **overrides))


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")
    yield context.new_page()
    context.close()


def feedback_rows(db: str) -> list:
    from kefu_router.store import Store
    from kefu_router.store.tables import Feedback

    store = Store(db)
    try:
        with store._session() as session:
            return session.query(Feedback).order_by(Feedback.id).all()
    finally:
        store.close()


def test_open_the_console_and_route_the_angry_buyer(tiny_bundle, db, page):
    with start(tiny_bundle, db) as base:
        expected = shots.route(base, [(t["role"], t["text"]) for t in ANGRY["turns"]], "api-side")
        page.goto(f"{base}/console")
        assert "对话" in page.title()
        page.get_by_label("粘贴对话").fill((ROOT / "examples" / "angry_buyer.json").read_text(encoding="utf-8"))
        page.get_by_role("button", name="路由").click()
        card = page.locator("section.playbook")
        card.wait_for()
        pb = expected["playbook"]
        text = card.inner_text()
        for shown in (pb["id"], pb["name"], pb["queue"], f"P{pb['priority']}", f"{pb['sla_seconds']} 秒", pb["opening"]):
            assert shown in text
        assert page.locator("svg.trajectory circle").count() == 3
        assert expected["rule"] in page.locator("section.reasons").inner_text()


def _queue(page, base: str, query: str = "below=1") -> list[str]:
    page.goto(f"{base}/console/review?{query}")
    page.locator("article.item").first.wait_for()
    return page.locator("article.item").evaluate_all("items => items.map(i => i.dataset.id)")


def _saved(page, reviewed: int) -> None:
    from playwright.sync_api import expect

    expect(page.locator("#reviewed")).to_have_text(str(reviewed), timeout=10_000)


def test_correct_one_label_with_the_keyboard_and_find_the_feedback_row(tiny_bundle, db, page):
    from kefu_router.labels import EMOTION

    with start(tiny_bundle, db) as base:
        routed = shots.route(base, [(t["role"], t["text"]) for t in ANGRY["turns"]], "kb-1")
        ids = _queue(page, base)
        assert sorted(ids) == sorted(p["prediction_id"] for p in routed["predictions"])  # tiny model: all uncertain
        page.get_by_label("审核人 ID").fill("sup-1")
        first = page.locator("article.item").first
        first.focus()
        predicted = first.locator("fieldset[data-head=emotion] input:checked").get_attribute("value")
        corrected = next(label for label in EMOTION.labels if label != predicted)
        page.keyboard.press(str(EMOTION.labels.index(corrected) + 1))
        page.keyboard.press("Enter")
        _saved(page, 1)
        assert "更正 emotion" in first.locator(".status").inner_text()
        assert page.evaluate("document.activeElement.dataset.id") == ids[1]  # on to the next item
        assert page.locator("#remaining").inner_text() == "2"
        prediction = next(p for p in routed["predictions"] if p["prediction_id"] == ids[0])
    [row] = feedback_rows(db)
    assert (row.prediction_id, row.emotion, row.intent, row.agent_id) == (ids[0], corrected, prediction["intent"]["label"], "sup-1")
    assert row.customer_type == [t["label"] for t in prediction["customer_type"]]
    assert row.idempotency_key.startswith("console-") and row.playbook is None


def test_a_minute_of_reviewing_with_the_keyboard(tiny_bundle, db, page):
    """Confirm or correct 24 queued messages with the keyboard only; reports items per minute (the page's own speed)."""
    from kefu_router.labels import INTENT

    with start(tiny_bundle, db) as base:
        for i in range(8):
            shots.route(base, [(t["role"], t["text"]) for t in ANGRY["turns"]], f"minute-{i}")
        ids = _queue(page, base)
        assert len(ids) == 24
        page.locator("article.item").first.focus()
        actions = [["Enter"], ["2", "Enter"], ["ArrowRight", "6", "Enter"], ["ArrowRight", "ArrowRight", "3", "Enter"]]
        started = time.perf_counter()
        for n in range(len(ids)):
            for key in actions[n % 4]:
                page.keyboard.press(key)
            _saved(page, n + 1)
        seconds = time.perf_counter() - started
        print(f"\nkeyboard review: {len(ids)} items in {seconds:.1f} s = {len(ids) / seconds * 60:.0f} items/min "
              f"(keys per item: 1 to confirm, 2-4 to correct one head)")
        assert page.locator("#remaining").inner_text() == "0"
    rows = feedback_rows(db)
    assert [r.prediction_id for r in rows] == ids and len({r.idempotency_key for r in rows}) == 24
    assert {r.intent for r in rows[2::4]} == {INTENT.labels[5]}  # the third action set intent with digit 6


def test_the_playbook_is_corrected_and_the_browser_sends_the_api_key_it_was_given(tiny_bundle, db, browser):
    from kefu_router.playbooks import load_playbooks

    context = browser.new_context(http_credentials={"username": "sup-9", "password": "s3cret"})
    page = context.new_page()
    try:
        with start(tiny_bundle, db, api_key="s3cret") as base:
            routed = shots.route(base, [(t["role"], t["text"]) for t in ANGRY["turns"]], "key-1", api_key="s3cret")
            _queue(page, base)
            assert page.get_by_label("审核人 ID").input_value() == "sup-9"
            item = page.locator("article.item").first
            item.focus()
            other = next(i for i in load_playbooks().playbooks if i != routed["playbook"]["id"])
            page.keyboard.press("p")
            item.locator("select.playbook").select_option(other)
            page.keyboard.press("Escape")
            page.keyboard.press("Enter")
            _saved(page, 1)
    finally:
        context.close()
    [row] = feedback_rows(db)
    assert (row.decision_id, row.playbook, row.agent_id) == (routed["prediction_id"], other, "sup-9")


@pytest.mark.parametrize("width, height", [(1280, 800), (390, 844)])
def test_both_views_fit_the_screen_have_labelled_controls_and_a_visible_focus(tiny_bundle, db, browser, width, height):
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    unlabelled = """() => [...document.querySelectorAll('input, select, textarea, button')]
        .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label') && !el.textContent.trim())
        .map(el => el.outerHTML.slice(0, 80))"""
    try:
        with start(tiny_bundle, db) as base:
            shots.route(base, [(t["role"], t["text"]) for t in ANGRY["turns"]], "fit-1")
            page.goto(f"{base}/console")
            page.get_by_label("粘贴对话").fill(shots.as_lines(shots.example_turns()))
            page.get_by_role("button", name="路由").click()
            page.locator("section.playbook").wait_for()
            for view in ("conversation", "review"):
                if view == "review":
                    _queue(page, base)
                assert page.evaluate("document.documentElement.scrollWidth") <= width, f"{view} scrolls sideways at {width}px"
                assert page.evaluate(unlabelled) == [], view
            assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "solid"  # the focused item
    finally:
        context.close()


def test_the_screenshot_script_makes_both_pictures(tiny_bundle, db, page, tmp_path):
    with start(tiny_bundle, db) as base:
        shots.route(base, [(t["role"], t["text"]) for t in ANGRY["turns"]], "shot-1")
        paths = shots.take_screenshots(page, base, tmp_path / "shots", below=1)
    for path in paths:
        header = path.read_bytes()[:24]
        assert header[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">I", header[16:20])[0] == 1280
