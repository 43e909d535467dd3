"""Screenshots of the review console for the README: docs/console-conversation.png and docs/console-review.png.

    python scripts/console_screenshots.py                       # bundled model, writes into docs/
    python scripts/console_screenshots.py --model DIR --out DIR

Starts the service in-process (uvicorn on a free port, a SQLite store in a temporary directory, message
text stored PII-masked), sends the example conversations and a few more through POST /v1/route, then
opens both views in headless Chromium (Debian's /usr/bin/chromium, or $KEFU_CHROMIUM, driven by
Playwright for Python; no browser download) at 1280x800. tests/test_console_browser.py uses the same
helpers, and runs `take_screenshots` on the tiny test model so this script cannot rot.
Needs the serve and dev extras and `apt-get install chromium fonts-wqy-microhei`.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("KEFU_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# More traffic for the review queue: typical buyer messages, some of them unclear.
MORE = [
    [("customer", "这个能便宜点吗 别家才卖99"), ("agent", "亲 这款是正品保障哦"), ("customer", "那我再看看吧")],
    [("customer", "我的快递到哪了"), ("agent", "亲，包裹已到杭州中转站"), ("customer", "怎么还没到 明天就要用啊")],
    [("customer", "收到的杯子是碎的 怎么退"), ("agent", "非常抱歉 麻烦拍个照片"), ("customer", "拍好了 什么时候能退款")],
    [("customer", "这条裙子有L码吗"), ("agent", "有的亲"), ("customer", "好的")],
    [("customer", "在吗"), ("customer", "客服人呢 回一下")],
    [("customer", "质量太差了 穿一次就起球"), ("customer", "我要投诉 你们就是骗子")],
]


@contextmanager
def serve(settings) -> Iterator[str]:
    """The service for `settings` on 127.0.0.1 (a free port) in a thread; yields its base URL."""
    import uvicorn

    from kefu_router.serve.app import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_config=None,
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, name="console-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the service did not start")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def launch(playwright):
    """Headless Chromium from the system package (never a Playwright download)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def route(base_url: str, turns: list[tuple[str, str]], conversation_id: str, api_key: str | None = None) -> dict:
    """POST /v1/route, as production traffic does (so the prediction log and the review queue fill)."""
    import httpx

    body = {"conversation_id": conversation_id, "turns": [{"role": r, "text": t} for r, t in turns]}
    headers = {"X-API-Key": api_key} if api_key else {}
    response = httpx.post(f"{base_url}/v1/route", json=body, headers=headers, timeout=30)
    response.raise_for_status()
    return response.json()


def example_turns(name: str = "angry_buyer") -> list[tuple[str, str]]:
    body = json.loads((ROOT / "examples" / f"{name}.json").read_text(encoding="utf-8"))
    return [(t["role"], t["text"]) for t in body["turns"]]


def as_lines(turns: list[tuple[str, str]]) -> str:
    """The paste format a supervisor uses: 买家：… / 客服：… per line."""
    return "\n".join(f"{'买家' if role == 'customer' else '客服'}：{text}" for role, text in turns)


def take_screenshots(page, base_url: str, out: Path, below: float = 0.6) -> tuple[Path, Path]:
    """Route the angry buyer in the conversation view, then open the review queue; save both as PNG."""
    out.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto(f"{base_url}/console")
    page.get_by_label("粘贴对话").fill(as_lines(example_turns()))
    page.get_by_role("button", name="路由").click()
    page.locator("section.playbook").wait_for()
    conversation = out / "console-conversation.png"
    page.screenshot(path=str(conversation), full_page=True)
    page.goto(f"{base_url}/console/review?below={below}")
    page.locator("article.item").first.wait_for()
    review = out / "console-review.png"
    page.screenshot(path=str(review), full_page=False)
    return conversation, review


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "default"))
    parser.add_argument("--out", default=str(ROOT / "docs"))
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from kefu_router.serve.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(model=args.model, db=str(Path(tmp) / "console.db"), store_text=True, log_interval_ms=20)
        with serve(settings) as base_url, sync_playwright() as p:
            for i, name in enumerate(("angry_buyer", "anxious_buyer", "hesitant_buyer")):
                route(base_url, example_turns(name), f"demo-{i}")
            for i, turns in enumerate(MORE):
                route(base_url, turns, f"c-2024061{i}")
            browser = launch(p)
            try:
                paths = take_screenshots(browser.new_page(locale="zh-CN"), base_url, Path(args.out))
            finally:
                browser.close()
    print("\n".join(map(str, paths)))


if __name__ == "__main__":
    main()
