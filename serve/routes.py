"""HTTP routes: thin handlers over Predictor (through the micro-batcher) and Router.

Limits that depend on settings (messages per request, turns, text length) are
checked here; shape and type errors are caught by the schemas. Texts longer
than `max_text_chars` are cut and flagged `truncated` rather than rejected: the
model reads only the first `max_length` tokens anyway, and a customer message
must not be lost because it was long. Bodies over `max_body_bytes` get 413.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Optional

from fastapi import APIRouter, Depends, HTTPException, Request, Security
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST

from kefu_router.conversation import Conversation, cut_message
from kefu_router.labels import schema_dict
from kefu_router.privacy import mask_pii
from kefu_router.serve.schemas import (
    ClassifyRequest,
    ClassifyResponse,
    MessagePrediction,
    ModelInfo,
    RouteRequest,
    RouteResponse,
    TurnPrediction,
)

_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="the service's API key, when one is set")
_bearer = HTTPBearer(auto_error=False, description="the API key as a Bearer token")


# Dependencies are `async def`: FastAPI runs a plain `def` dependency in a worker thread, a thread
# hop per request that showed up in profiles under load.
async def service(request: Request):
    return request.app.state.service


async def require_api_key(
    request: Request,
    key: Annotated[Optional[str], Security(_api_key)],
    bearer: Annotated[Optional[HTTPAuthorizationCredentials], Security(_bearer)],
) -> None:
    expected = request.app.state.service.settings.api_key
    if expected is None:
        return
    given = key or (bearer.credentials if bearer else "")
    if not secrets.compare_digest(given.encode(), expected.get_secret_value().encode()):
        raise HTTPException(401, "missing or wrong API key (send X-API-Key or Authorization: Bearer)",
                            headers={"WWW-Authenticate": "Bearer"})


def _too_many(field: str, count: int, limit: int) -> HTTPException:
    return HTTPException(422, [{"loc": ["body", field], "msg": f"{count} {field}, at most {limit} allowed",
                                "type": "too_long"}])


def _log(request: Request, svc, texts: list[str], **fields) -> None:
    """What the access log line carries for this request: counts and decisions, masked text only on request.

    `texts` are the texts as cut to `max_text_chars` (what the model read), so masking costs at most that much.
    """
    if svc.settings.log_masked_text:
        fields["texts_masked"] = [mask_pii(t) for t in texts]
    request.state.log = fields


health = APIRouter(tags=["operations"])
v1 = APIRouter(prefix="/v1", tags=["v1"], dependencies=[Depends(require_api_key)])


@health.get("/healthz", summary="the process is up")
async def healthz() -> dict:
    return {"status": "ok"}


@health.get("/readyz", summary="the model is loaded and warmed up", responses={503: {"description": "not ready"}})
async def readyz(svc=Depends(service)):
    if not svc.ready:
        return JSONResponse({"status": "starting"}, status_code=503)
    return {"status": "ready", "model_version": svc.predictor.version}


@health.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
async def metrics(svc=Depends(service)):
    return PlainTextResponse(svc.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


@v1.get("/model", summary="model version, labels and headline metrics")
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


_errors = {413: {"description": "body too large"}, 503: {"description": "overloaded or not ready; retry"}}


@v1.post("/classify", summary="labels and scores for one or many messages", responses=_errors)
async def classify(body: ClassifyRequest, request: Request, svc=Depends(service)) -> ClassifyResponse:
    settings = svc.settings
    if len(body.messages) > settings.max_messages:
        raise _too_many("messages", len(body.messages), settings.max_messages)
    for m in body.messages:
        if len(m.context) > settings.max_turns:
            raise _too_many("context", len(m.context), settings.max_turns)
    limit = settings.max_text_chars
    inputs = [cut_message(m.text, [(t.role, t.text) for t in m.context], limit) for m in body.messages]
    predictions = await svc.predict([message for message, _ in inputs])
    _log(request, svc, [message.text for message, _ in inputs], messages=len(inputs))
    return ClassifyResponse(
        model_version=svc.predictor.version,
        results=[MessagePrediction(**p, truncated=cut) for p, (_, cut) in zip(predictions, inputs)],
    )


@v1.post("/route", summary="the playbook for a conversation, with reasons", responses=_errors)
async def route(body: RouteRequest, request: Request, svc=Depends(service)) -> RouteResponse:
    turns = body.turns
    if len(turns) > svc.settings.max_turns:
        raise _too_many("turns", len(turns), svc.settings.max_turns)
    try:
        chat = Conversation.of([(t.role, t.text) for t in turns], max_chars=svc.settings.max_text_chars)
    except ValueError as exc:  # roles and texts are checked by the schema: only "no customer turn" is left
        raise HTTPException(422, [{"loc": ["body", "turns"], "msg": str(exc), "type": "value_error"}]) from None
    predictions = await svc.predict(list(chat.messages))
    decision = chat.route(svc.router, predictions)
    customer = chat.customer
    svc.metrics.routed.labels(decision.playbook.id, str(decision.needs_human_review).lower()).inc()
    _log(request, svc, [message.text for message in chat.messages], turns=len(turns), customer_turns=len(customer),
         playbook=decision.playbook.id, rule=decision.rule, needs_human_review=decision.needs_human_review)
    return RouteResponse(
        conversation_id=body.conversation_id,
        model_version=svc.predictor.version,
        playbook=decision.playbook,
        rule=decision.rule,
        needs_human_review=decision.needs_human_review,
        reasons=decision.reasons,
        aggregate=decision.aggregate,
        predictions=[TurnPrediction(**p, turn=i, truncated=cut) for p, i, cut in zip(predictions, customer, chat.truncated)],
    )
