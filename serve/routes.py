"""HTTP routes: thin handlers over Predictor (through the micro-batcher) and Router.

`/healthz`, `/readyz` and `/metrics` are the `health` router; `/v1/*` comes from
`v1_router(settings)`, built per service because its request models carry the
settings' limits (schemas.request_models) and because it declares the API key
in the OpenAPI schema only when one is set. Its routes are `CheckedRoute`s
(intake.py): API key, then content type, then a strict UTF-8 JSON body. Texts
longer than `max_text_chars` are cut and flagged `truncated` rather than
rejected: the model reads only the first `max_length` tokens anyway, and a
customer message must not be lost because it was long. Bodies over
`max_body_bytes` get 413 (observability.ServiceMiddleware).
"""

import os
from datetime import datetime, timedelta, timezone
from typing import Annotated, Optional

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from kefu_router.conversation import Conversation, cut_message
from kefu_router.labels import schema_dict
from kefu_router.privacy import mask_pii
from kefu_router.serve.intake import CheckedRoute, api_key_header, bearer
from kefu_router.serve.schemas import (
    ClassifyResponse,
    FeedbackResponse,
    MessagePrediction,
    ModelInfo,
    RouteResponse,
    TurnPrediction,
    feedback_model,
    request_models,
)
from kefu_router.serve.settings import Settings

# Dependencies are `async def`: FastAPI runs a plain `def` dependency in a worker thread, a thread
# hop per request that showed up in profiles under load.
async def service(request: Request):
    return request.app.state.service


async def declare_api_key(
    key: Annotated[Optional[str], Security(api_key_header)],
    token: Annotated[Optional[HTTPAuthorizationCredentials], Security(bearer)],
) -> None:
    """Puts the API key schemes into the OpenAPI schema; CheckedRoute checks the key, before the body is read."""


class Detail(BaseModel):
    detail: str


def _errors(*codes: int) -> dict:
    described = {400: "body is not UTF-8", 401: "missing or wrong API key", 404: "no logged prediction by that id "
                 "(or conversation id and turn)", 409: "the idempotency key was used for another request",
                 413: "body too large", 415: "body is not JSON", 503: "overloaded or not ready; retry"}
    return {code: {"model": Detail, "description": described[code]} for code in codes}


def _log(request: Request, svc, texts: list[str], **fields) -> None:
    """What the access log line carries for this request: counts and decisions, masked text only on request.

    `texts` are the texts as cut to `max_text_chars` (what the model read), so masking costs at most that much.
    """
    if svc.settings.log_masked_text:
        fields["texts_masked"] = [mask_pii(t) for t in texts]
    request.state.log = fields


def new_prediction_id() -> str:
    """128 random bits as 32 hex digits (the API's prediction_id): a quarter of uuid.uuid4().hex's time on the event loop."""
    return os.urandom(16).hex()


def _message_row(svc, p: dict, now: datetime, text: str, **fields) -> tuple[str, dict]:
    """(prediction_id, log row) of one message prediction; built on the event loop, so only references, no copies."""
    pid = new_prediction_id()
    row = {"id": pid, "kind": "message", "created_at": now, "model_version": svc.predictor.version,
           "emotion": p["emotion"]["label"], "intent": p["intent"]["label"],
           "customer_type": [t["label"] for t in p["customer_type"]],
           "scores": {"emotion": p["emotion"]["scores"], "intent": p["intent"]["scores"],
                      "customer_type": p["customer_type_scores"]}, **fields}
    if svc.keeps_text:
        row["text"] = text  # the log's thread turns it into an HMAC and, when configured, a masked copy
    return pid, row


health = APIRouter(tags=["operations"])


# HEAD as well as GET: load balancers and uptime checks probe with either.
@health.head("/healthz", summary="the process is up", operation_id="healthz_head")
@health.get("/healthz", summary="the process is up", operation_id="healthz")
async def healthz() -> dict:
    return {"status": "ok"}


@health.head("/readyz", summary="the model is loaded and warmed up", operation_id="readyz_head",
             responses={503: {"description": "not ready"}})
@health.get("/readyz", summary="the model is loaded and warmed up", operation_id="readyz",
            responses={503: {"description": "not ready"}})
async def readyz(svc=Depends(service)):
    if not svc.ready:
        return JSONResponse({"status": "starting"}, status_code=503)
    return {"status": "ready", "model_version": svc.predictor.version}


@health.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
async def metrics(svc=Depends(service)):
    return PlainTextResponse(svc.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


def v1_router(settings: Settings) -> APIRouter:
    """The /v1 routes, with request models and auth declaration for these settings."""
    keyed = settings.api_key is not None
    v1 = APIRouter(prefix="/v1", tags=["v1"], route_class=CheckedRoute,
                   dependencies=[Depends(declare_api_key)] if keyed else [])
    ClassifyRequest, RouteRequest = request_models(settings)
    FeedbackRequest = feedback_model(settings)
    auth = (401,) if keyed else ()

    @v1.get("/model", summary="model version, labels and headline metrics", responses=_errors(*auth))
    async def model_info(svc=Depends(service)) -> ModelInfo:
        bundle = svc.predictor.bundle
        return ModelInfo(
            version=bundle.version,
            precision=svc.predictor.precision,
            max_length=bundle.max_length,
            max_context_turns=bundle.max_context_turns,
            labels=schema_dict(),
            thresholds=bundle.thresholds,
            metrics=bundle.metadata.get("metrics", {}),
            playbooks={"source": svc.router.playbooks.source, "version": svc.router.playbooks.version,
                       "ids": list(svc.router.playbooks.playbooks)},
        )

    @v1.post("/classify", summary="labels and scores for one or many messages",
             responses=_errors(400, *auth, 413, 415, 503))
    async def classify(body: ClassifyRequest, request: Request, svc=Depends(service)) -> ClassifyResponse:
        limit = settings.max_text_chars
        inputs = [cut_message(m.text, [(t.role, t.text) for t in m.context], limit) for m in body.messages]
        predictions = await svc.predict([message for message, _ in inputs])
        now = datetime.now(timezone.utc)
        logged = [_message_row(svc, p, now, m.text, conversation_id=m.conversation_id, turn=m.turn)
                  for p, m in zip(predictions, body.messages)]
        svc.log_predictions([row for _, row in logged])
        _log(request, svc, [message.text for message, _ in inputs], messages=len(inputs))
        return ClassifyResponse(
            model_version=svc.predictor.version,
            results=[MessagePrediction(**p, prediction_id=pid, truncated=cut)
                     for p, (_, cut), (pid, _) in zip(predictions, inputs, logged)],
        )

    @v1.post("/route", summary="the playbook for a conversation, with reasons",
             responses=_errors(400, *auth, 413, 415, 503))
    async def route(body: RouteRequest, request: Request, svc=Depends(service)) -> RouteResponse:
        turns = body.turns
        try:
            chat = Conversation.of([(t.role, t.text) for t in turns], max_chars=settings.max_text_chars)
        except ValueError as exc:  # roles and texts are checked by the schema: only "no customer turn" is left
            raise HTTPException(422, [{"loc": ["body", "turns"], "msg": str(exc), "type": "value_error"}]) from None
        predictions = await svc.predict(list(chat.messages))
        decision = chat.route(svc.router, predictions)
        customer = chat.customer
        now, decision_id = datetime.now(timezone.utc), new_prediction_id()
        review = decision.needs_human_review
        logged = [_message_row(svc, p, now, turns[i].text, conversation_id=body.conversation_id, turn=i,
                               decision_id=decision_id, needs_human_review=review) for p, i in zip(predictions, customer)]
        svc.log_predictions([
            {"id": decision_id, "kind": "route", "created_at": now, "model_version": svc.predictor.version,
             "conversation_id": body.conversation_id, "playbook": decision.playbook.id, "rule": decision.rule,
             "needs_human_review": review},
            *(row for _, row in logged),
        ])
        svc.metrics.routed.labels(decision.playbook.id, str(decision.needs_human_review).lower()).inc()
        _log(request, svc, [message.text for message in chat.messages], turns=len(turns), customer_turns=len(customer),
             playbook=decision.playbook.id, rule=decision.rule, needs_human_review=decision.needs_human_review)
        return RouteResponse(
            prediction_id=decision_id,
            conversation_id=body.conversation_id,
            model_version=svc.predictor.version,
            playbook=decision.playbook,
            rule=decision.rule,
            needs_human_review=decision.needs_human_review,
            reasons=decision.reasons,
            aggregate=decision.aggregate,
            predictions=[TurnPrediction(**p, prediction_id=pid, turn=i, truncated=cut)
                         for p, i, cut, (pid, _) in zip(predictions, customer, chat.truncated, logged)],
        )

    @v1.post("/feedback", status_code=201, summary="an agent's final labels or playbook for a logged prediction",
             responses=_errors(400, *auth, 404, 409, 413, 415, 503))
    async def feedback(body: FeedbackRequest, request: Request, svc=Depends(service)) -> FeedbackResponse:
        result = await record_feedback(svc, body)
        request.state.log = {"feedback_id": result.feedback_id, "replayed": result.replayed}  # ids only, never text
        return result

    @v1.get("/quality", summary="agreement with agents, review flag and drift, per model version (the quality report's figures)",
            responses=_errors(*auth, 503))
    async def quality(svc=Depends(service),
                      days: Annotated[int, Query(ge=1, le=366, description="look back this many days")] = settings.quality_window_days) -> dict:
        from kefu_router.quality.report import compute
        from kefu_router.store.database import StoreUnavailable

        if svc.store is None:
            raise HTTPException(503, "the prediction log is off (KEFU_ROUTER_PREDICTION_LOG=false): no figures")
        until = datetime.now(timezone.utc)
        try:
            return await run_in_threadpool(compute, svc.store, until - timedelta(days=days), until,
                                           svc.predictor.bundle.metadata, psi_warning=settings.psi_warning)
        except StoreUnavailable as exc:
            raise HTTPException(503, f"store unavailable: {exc}", headers={"Retry-After": "5"}) from None

    return v1


async def record_feedback(svc, body: BaseModel) -> FeedbackResponse:
    """Commit a validated FeedbackRequest through the store: POST /v1/feedback and the console's actions.

    Raises HTTPException: 503 (log off or store down), 404 (unknown prediction), 409 (idempotency key reused),
    422 (labels for a routing decision, a playbook for a /v1/classify prediction).
    """
    from kefu_router.store.database import FeedbackRejected, IdempotencyConflict, StoreUnavailable, UnknownPrediction

    if svc.store is None:
        raise HTTPException(503, "the prediction log is off (KEFU_ROUTER_PREDICTION_LOG=false): feedback cannot be stored")
    try:
        result = await run_in_threadpool(svc.add_feedback, **body.model_dump())
    except UnknownPrediction as exc:
        raise HTTPException(404, str(exc)) from None
    except FeedbackRejected as exc:
        raise HTTPException(422, [{"loc": ["body", exc.field], "msg": str(exc), "type": "value_error"}]) from None
    except IdempotencyConflict as exc:
        raise HTTPException(409, str(exc)) from None
    except StoreUnavailable as exc:
        svc.metrics.store_up.set(0)
        raise HTTPException(503, f"feedback store unavailable, nothing was stored; retry with the same "
                                 f"idempotency_key ({exc})", headers={"Retry-After": "5"}) from None
    return FeedbackResponse(feedback_id=result.id, prediction_id=result.prediction_id, decision_id=result.decision_id,
                            created_at=result.created_at, replayed=result.replayed)
