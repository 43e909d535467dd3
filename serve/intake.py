"""What a `/v1` request passes before its handler runs, in this order: API key, content type, body.

`CheckedRoute` is the route class of the `/v1` router (FastAPI's documented way
to customise request handling). Before the body is read it answers
- 401 when the service has an API key and the request lacks it (X-API-Key or a Bearer token),
- 415 when a route that takes a body gets no JSON content type (`application/json` or
  `application/*+json`; FastAPI would read such a body as a string and answer a misleading 422).
The body is then parsed by `StrictJSONRequest.json`: 400 for a body that is not
UTF-8 (UTF-16 and UTF-32 included, which Python's json would otherwise detect
and accept; a UTF-8 BOM is allowed), and every JSON the parser cannot take
(syntax, nesting deeper than the parser allows, integers longer than Python
converts) becomes FastAPI's one 422 shape, `{"type": "json_invalid", "loc": ["body", pos], "msg"}`.
"""

from __future__ import annotations

import email.message
import json
import secrets
from typing import Any, Callable, Coroutine

from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPBearer

JSON_TYPES = "application/json or application/*+json"
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the service's API key")
bearer = HTTPBearer(auto_error=False, description="the API key as a Bearer token")


async def check_api_key(request: Request) -> None:
    """Raise 401 unless the service has no key or the request carries it (X-API-Key or Authorization: Bearer)."""
    expected = request.app.state.service.settings.api_key
    if expected is None:
        return
    token = await bearer(request)
    given = await api_key_header(request) or (token.credentials if token else "")
    if not secrets.compare_digest(given.encode(), expected.get_secret_value().encode()):
        raise HTTPException(401, "missing or wrong API key (send X-API-Key or Authorization: Bearer)",
                            headers={"WWW-Authenticate": "Bearer"})


def is_json_content_type(value: str) -> bool:
    message = email.message.Message()
    message["content-type"] = value
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


def parse_json(body: bytes) -> Any:
    """The JSON value of a UTF-8 body; HTTPException 400 when it is not UTF-8, JSONDecodeError when not JSON."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise HTTPException(400, f"request body is not valid UTF-8 JSON ({exc.reason} at byte {exc.start})") from None
    if "\x00" in text:  # JSON never holds a raw NUL: these are UTF-16 or UTF-32 code units
        raise HTTPException(400, "request body is not valid UTF-8 JSON (NUL bytes: UTF-16 or UTF-32?)")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise json.JSONDecodeError("nesting too deep", text, 0) from None
    except ValueError as exc:  # an integer longer than sys.get_int_max_str_digits()
        raise json.JSONDecodeError(str(exc).split(";")[0], text, 0) from None  # the part before the advice


class StrictJSONRequest(Request):
    """A request whose `json()` is `parse_json` of its body."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_json(await self.body())
        return self._json


class CheckedRoute(APIRoute):
    """An APIRoute that checks the API key and the content type before the body is read, then parses it strictly."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        has_body = self.body_field is not None

        async def checked(request: Request) -> Response:
            await check_api_key(request)
            content_type = request.headers.get("content-type", "")
            if has_body and not is_json_content_type(content_type):
                declared = f"content type {content_type!r} is not JSON" if content_type else "no content type"
                raise HTTPException(415, f"{declared}: send {JSON_TYPES}")
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return checked
