"""The review console: server-rendered pages at /console on the service's own app (docs/serving.md "Review console").

    GET  /console                     conversation view: paste a conversation, see labels, chart, playbook, reasons
    POST /console                     route the pasted conversation (form); bad input gets the page with a 4xx
    GET  /console/conversation?id=    a routing decision from the prediction log (decision, message or conversation id)
    GET  /console/review              the review queue, with filters; keyboard actions in static/console.js
    POST /console/feedback            one review action: the FeedbackRequest of POST /v1/feedback, same store path
    GET  /console/static/{name}       the page's CSS and JavaScript (packaged; no CDN, works offline)

With KEFU_ROUTER_API_KEY set, every console URL needs it: X-API-Key, a Bearer token, or HTTP Basic with
the key as password (the browser asks; the user name becomes the default reviewer id). A pasted
conversation is predicted and routed exactly like POST /v1/route but not written to the prediction log:
trial runs must not enter the quality figures or the review queue. Writes take JSON only and refuse a
foreign Origin, so another site cannot submit feedback with the supervisor's credentials.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import ValidationError

from kefu_router.conversation import Conversation
from kefu_router.labels import CUSTOMER_TYPE, EMOTION, HEADS_BY_NAME, INTENT
from kefu_router.serve.batcher import Overloaded
from kefu_router.serve.console_views import (
    HEAD_ZH,
    ROLE_NAMES,
    ConsoleInputError,
    TurnView,
    build_view,
    logged_prediction,
    parse_pasted,
)
from kefu_router.serve.intake import check_api_key, is_json_content_type, parse_json
from kefu_router.serve.routes import record_feedback, service
from kefu_router.serve.schemas import feedback_model, request_models
from kefu_router.serve.settings import Settings

HERE = Path(__file__).resolve().parent
STATIC = {"console.css": "text/css; charset=utf-8", "console.js": "text/javascript; charset=utf-8"}
HEADERS = {  # pages may show customer text: never cached, never framed, scripts and styles from here only
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
REVIEW_DAYS = 7  # the review queue's span when no date is chosen
PAGE_SIZE = 50
_templates = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]),
                         trim_blocks=True, lstrip_blocks=True)


async def console_user(request: Request) -> str:
    """The reviewer's default id: the HTTP Basic user name, else "console"; 401 (Basic challenge) without the key."""
    settings = request.app.state.service.settings
    user, password = _basic(request.headers.get("authorization", ""))
    if settings.api_key is None:
        return user or "console"
    if password is not None and secrets.compare_digest(password.encode(), settings.api_key.get_secret_value().encode()):
        return user or "console"
    try:
        await check_api_key(request)  # X-API-Key or Bearer, as on /v1
    except HTTPException:
        raise HTTPException(401, "the console needs the service's API key (HTTP Basic: any user name, the key as password)",
                            headers={"WWW-Authenticate": 'Basic realm="kefu-router console", charset="UTF-8"'}) from None
    return "console"


def _basic(header: str) -> tuple[Optional[str], Optional[str]]:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        user, sep, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    return (user.strip()[:200] or None, password) if sep else (None, None)


def render(name: str, status: int = 200, **context) -> HTMLResponse:
    """A console template as an HTML response with the console's security headers."""
    context.update(ROLE_NAMES=ROLE_NAMES, HEAD_ZH=HEAD_ZH, EMOTION=EMOTION, INTENT=INTENT, CUSTOMER_TYPE=CUSTOMER_TYPE)
    return HTMLResponse(_templates.get_template(name).render(**context), status_code=status, headers=HEADERS)


NUL_PROBLEM = "含有 NUL 字符 (U+0000)，无法查询 (contains a NUL character, which the store cannot search for)"


def console_router(settings: Settings) -> APIRouter:
    """The /console routes for these settings (request models carry their limits, as on /v1)."""
    ZoneInfo(settings.console_timezone)  # a bad name fails start-up, not the first page
    _, RouteRequest = request_models(settings)
    FeedbackRequest = feedback_model(settings)
    console = APIRouter(prefix="/console", include_in_schema=False)

    def page(svc, user: str, status: int = 200, **context) -> HTMLResponse:
        return render("conversation.html", status, user=user, store_text=svc.settings.store_text,
                      max_chars=settings.max_text_chars, **context)

    @console.get("")
    async def conversation_form(svc=Depends(service), user: str = Depends(console_user)):
        return page(svc, user)

    @console.post("")
    async def route_pasted(request: Request, svc=Depends(service), user: str = Depends(console_user)):
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
            return page(svc, user, 415, problems=[("表单 form", "请用页面上的表单提交 (send the page's form)")])
        try:
            form = parse_qs((await request.body()).decode("utf-8"), keep_blank_values=True, max_num_fields=10)
        except (UnicodeDecodeError, ValueError):
            return page(svc, user, 400, problems=[("表单 form", "不是有效的 UTF-8 表单 (not a UTF-8 form)")])
        pasted = (form.get("conversation") or [""])[0]
        try:
            turns, conversation_id = parse_pasted(pasted, RouteRequest)
        except ConsoleInputError as exc:
            return page(svc, user, 422, pasted=pasted, problems=exc.problems)
        chat = Conversation.of(turns, max_chars=settings.max_text_chars)
        try:
            predictions = await svc.predict(list(chat.messages))
        except Overloaded as exc:
            return page(svc, user, 503, pasted=pasted, problems=[("服务 service", f"繁忙，请稍后重试 ({exc})")])
        decision = chat.route(svc.router, predictions)
        by_turn = {i: (p, cut) for i, p, cut in zip(chat.customer, predictions, chat.truncated)}
        views = [TurnView(role, text, *by_turn.get(i, (None, False)), turn=i) for i, (role, text) in enumerate(turns)]
        notices = [f"第 {i + 1} 轮超过 {settings.max_text_chars} 字：模型只读了开头和结尾 (truncated, as the API does)"
                   for i, (role, text) in enumerate(turns) if by_turn.get(i, (None, False))[1]]
        notices.append("试算：这段对话没有写入预测日志，不会进入审核队列 (trial run: not logged)")
        return page(svc, user, pasted=pasted, conversation_id=conversation_id,
                    view=build_view(views, decision, svc.router, notices))

    @console.get("/conversation")
    async def logged_conversation(id: str = "", svc=Depends(service), user: str = Depends(console_user)):
        key = id.strip()[:200]
        if not key:
            return page(svc, user, 422, problems=[("id", "请输入对话 ID 或预测 ID (give a conversation id or a prediction id)")])
        if "\x00" in key:
            return page(svc, user, 422, problems=[("id", NUL_PROBLEM)])
        if svc.store is None:
            return page(svc, user, 503, problems=[("预测日志 prediction log", "未开启 (KEFU_ROUTER_PREDICTION_LOG=false)")])
        from kefu_router.store import StoreUnavailable
        from kefu_router.store.review import decision_view

        try:
            found = await run_in_threadpool(decision_view, svc.store, key)
        except StoreUnavailable as exc:
            return page(svc, user, 503, problems=[("预测日志 prediction log", f"数据库不可用 (store unavailable: {exc})")])
        if found is None or not found[1]:
            return page(svc, user, 404, lookup=key, problems=[("id", f"预测日志里没有 {key!r} 的路由决定 (no routing decision by that id)")])
        row, messages = found
        predictions = [logged_prediction(m) for m in messages]
        try:
            decision = svc.router.route([{**p, "text": m["text_masked"]} for p, m in zip(predictions, messages)])
        except ValueError as exc:  # labels of another schema (an older model's log rows)
            return page(svc, user, 422, lookup=key, problems=[("预测日志 prediction log", f"记录的预测无法按当前规则重算 ({exc})")])
        views = [TurnView("customer", m["text_masked"], p, prediction_id=m["id"], turn=m["turn"])
                 for p, m in zip(predictions, messages)]
        notices = [] if any(m["text_masked"] for m in messages) else [
            "预测日志没有存原文 (KEFU_ROUTER_STORE_TEXT=false)：只显示预测的标签 (no text stored: labels only)"]
        notices.append("客服的回复不写入预测日志，这里只有买家的消息 (agents' turns are never logged)")
        if (decision.playbook.id, decision.rule) != (row["playbook"], row["rule"]):
            notices.append(f"记录的决定是 {row['playbook']}（规则 {row['rule']}），按当前规则重算为 {decision.playbook.id}"
                           f"（规则 {decision.rule}）：规则文件或原文与当时不同 (recomputed with today's playbooks)")
        return page(svc, user, lookup=key, view=build_view(views, decision, svc.router, notices, logged=row))

    @console.get("/review")
    async def review(request: Request, svc=Depends(service), user: str = Depends(console_user)):
        return await review_page(request, svc, user, settings)

    @console.post("/feedback", status_code=201)
    async def feedback(request: Request, svc=Depends(service), user: str = Depends(console_user)):
        if not is_json_content_type(request.headers.get("content-type", "")):
            raise HTTPException(415, "send application/json")
        if not _same_origin(request):
            raise HTTPException(403, "cross-origin request refused")
        try:
            body = FeedbackRequest.model_validate(parse_json(await request.body()))
        except json.JSONDecodeError as exc:
            return JSONResponse({"detail": [{"type": "json_invalid", "loc": ["body", exc.pos], "msg": exc.msg}]}, 422)
        except ValidationError as exc:
            return JSONResponse({"detail": [{"type": e["type"], "loc": ["body", *e["loc"]], "msg": e["msg"]}
                                            for e in exc.errors(include_url=False)]}, 422)
        result = await record_feedback(svc, body)
        request.state.log = {"feedback_id": result.feedback_id, "replayed": result.replayed, "console": True}
        return JSONResponse(result.model_dump(mode="json"), 201)

    @console.get("/static/{name}")
    async def static(name: str, user: str = Depends(console_user)):
        if name not in STATIC:
            raise HTTPException(404, "no such file")
        return Response((HERE / "static" / name).read_bytes(), media_type=STATIC[name],
                        headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"})

    @console.get("/", include_in_schema=False)
    async def slash(user: str = Depends(console_user)):
        return RedirectResponse("/console", 308)

    return console


def _same_origin(request: Request) -> bool:
    """False when the browser says the request came from another site. Sec-Fetch-Site (every current browser)
    is computed by the browser, so it holds behind a proxy that rewrites Host; Origin is the fallback."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    host = request.headers.get("x-forwarded-host") or request.headers.get("host")
    return not origin or urlsplit(origin).netloc == host


async def review_page(request: Request, svc, user: str, settings: Settings) -> HTMLResponse:
    """GET /console/review: filters from the query string (bad ones get 422 and say why), then the queue."""
    from kefu_router.store import StoreUnavailable
    from kefu_router.store.review import HEADS, QueueQuery, model_versions, review_queue

    tz, playbooks = ZoneInfo(settings.console_timezone), svc.router.playbooks.playbooks
    queues = sorted({p.queue for p in playbooks.values()})
    q = request.query_params
    f = {k: q.get(k, "").strip()[:100] for k in ("queue", "head", "model", "date", "below", "reviewed")}
    problems = [(name, NUL_PROBLEM) for name, value in f.items() if "\x00" in value]
    if problems:  # the store (PostgreSQL) cannot compare text with NUL: say so instead of a 500
        f = {k: v.replace("\x00", "") for k, v in f.items()}
    if f["queue"] and f["queue"] not in queues:
        problems.append(("队列 queue", f"未知队列 {f['queue']!r}；可用：{', '.join(queues)}"))
    if f["head"] and f["head"] not in HEADS:
        problems.append(("标签组 head", f"未知 {f['head']!r}；可用：{', '.join(HEADS)}"))
    below = svc.router.review_below
    if f["below"]:
        try:
            below = float(f["below"])
            if not 0 <= below <= 1:
                raise ValueError
        except ValueError:
            problems.append(("置信度 below", f"应为 0 到 1 之间的数 (a number from 0 to 1), 收到 {f['below']!r}"))
    now = datetime.now(timezone.utc)
    since, until = now - timedelta(days=REVIEW_DAYS), now + timedelta(seconds=1)
    if f["date"]:
        try:
            day = datetime.strptime(f["date"], "%Y-%m-%d").replace(tzinfo=tz)
            since, until = day, day + timedelta(days=1)
            since.astimezone(timezone.utc), until.astimezone(timezone.utc)  # the store compares in UTC
        except ValueError:
            problems.append(("日期 date", f"应为 YYYY-MM-DD, 收到 {f['date']!r}"))
        except OverflowError:  # 0001-01-01 or 9999-12-31: the day (in UTC) leaves the calendar datetime can hold
            problems.append(("日期 date", f"超出可查询范围 (out of range: 0001-01-02 to 9999-12-30), 收到 {f['date']!r}"))
    context = dict(user=user, filters=f, queues=queues, heads=HEADS, below=below, tz=settings.console_timezone,
                   days=REVIEW_DAYS, store_text=settings.store_text, playbooks=playbooks, HEADS_BY_NAME=HEADS_BY_NAME)
    if problems:
        return render("review.html", 422, problems=problems, **context)
    if svc.store is None:
        return render("review.html", 503, problems=[("预测日志 prediction log", "未开启 (KEFU_ROUTER_PREDICTION_LOG=false)："
                                                     "没有可审核的预测")], **context)
    query = QueueQuery(since=since, until=until, below=below, head=f["head"] or None, model_version=f["model"] or None,
                       playbooks=tuple(i for i, p in playbooks.items() if p.queue == f["queue"]) if f["queue"] else None,
                       include_reviewed=f["reviewed"] == "1")
    try:
        # the newest predictions may still be on their way to the database
        await run_in_threadpool(svc.prediction_log.flush, 1.0)
        page = await run_in_threadpool(review_queue, svc.store, query, limit=PAGE_SIZE)
        versions = await run_in_threadpool(model_versions, svc.store, since, until)
    except StoreUnavailable as exc:
        return render("review.html", 503, problems=[("预测日志 prediction log", f"数据库不可用 (store unavailable: {exc})")], **context)
    for item in page.items:
        item["local_time"] = item["created_at"].astimezone(tz).strftime("%m-%d %H:%M:%S")
        item["prediction"] = logged_prediction(item)
    return render("review.html", page=page, versions=versions, **context)
