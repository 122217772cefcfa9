"""The Lapse churn-score HTTP service (BentoML 1.4): an edge like the CLI.

It parses requests, calls the `serve` jobs (``lapse.serve``) and turns their results into JSON;
it holds no scoring logic of its own. The endpoints are a FastAPI app mounted into the BentoML
service, so BentoML's OpenAPI page documents them (with examples) and a client's mistake is a
4xx naming the field and row, with no traceback in the log. BentoML adds ``/livez`` and
``/readyz`` (ready once a model is loaded). The hot paths, ``POST /score`` and ``/lookup``, are
answered by the service's own middleware from the body's bytes (``DIRECT``), with the same
functions and refusals as their routes, which document them.

Run it with ``lapse serve`` (or ``bentoml serve lapse.service:LapseChurn``): the settings come
from ``$LAPSE_CONFIG`` or ./lapse.toml and LAPSE_* variables, the model from
``$LAPSE_SERVE_MODEL_URI`` or the champion. ``as_of`` is always explicit in a request, or the
request's arrival time when left out: no transform reads a clock.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import hmac
import json
import logging
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import bentoml
import orjson
from bentoml._internal.server.http import traffic
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from base import LapseError, shown
from lapse import serve as jobs
from lapse.settings import Settings
from training.registry import model_info

log = logging.getLogger("lapse.service")
# BentoML's worker logs WARNING and up from other packages: the service's own lines (the model it
# serves, the warm-up, a refresh's swap) are INFO, what an operator reads when it starts
if logging.getLogger("lapse").level == logging.NOTSET:
    logging.getLogger("lapse").setLevel(logging.INFO)

JSON = "application/json"

#: Set by `lapse serve --build`: the BentoML model the built Bento carries.
BENTO_MODEL_ENV = "LAPSE_BENTO_MODEL"


def _bento_model() -> str | None:
    """The BentoML model tag to serve: while building, $LAPSE_BENTO_MODEL; inside a built Bento
    (BentoML runs it from the Bento's src folder, bento.yaml beside it), the model it carries;
    from source, none (the model comes from MLflow)."""
    if os.environ.get(BENTO_MODEL_ENV):
        return os.environ[BENTO_MODEL_ENV]
    here = (Path(__file__).resolve().parents[1], Path.cwd())
    manifest = next((p.parent / "bento.yaml" for p in here if p.name == "src"), None)
    if manifest is None or not manifest.is_file():
        return None
    import yaml

    info = yaml.safe_load(manifest.read_text()) or {}
    models = list(info.get("models") or [])
    for service in info.get("services") or []:  # BentoML 1.4 lists them per service
        models += service.get("models") or []
    tags = [str(m["tag"]) for m in models if str(m.get("tag", "")).startswith("lapse-churn:")]
    return tags[0] if tags else None


BENTO_MODEL = _bento_model()

Value = float | int | bool | str | None

_ROW_EXAMPLE = {
    "user_id": "u-1842",
    "platform": "ios",
    "status": "paid",
    "auto_renew_off": 1,
    "days_to_expiry": 3.5,
    "sessions_28d": 2,
    "country": "US",
}
_EVENT_EXAMPLE = {
    "activity_kind": "subscription",
    "created_at": 1767574008,
    "adid": "a7b8c9",
    "os_name": "ios",
    "user_id": "u-1842",
    "subscription_event_type": "activation",
    "subscription_product_id": "monthly_9_99",
    "subscription_expiration_time": "2026-02-05T08:00:00Z",
}


class ScoreRequest(BaseModel):
    """Feature rows: each maps EVERY feature of the model to a value or null (GET /metadata
    lists them; the example shows a few), plus `user_id` and optionally `platform`; unknown keys
    are ignored and listed. Categories are text. `reasons: false` leaves the reasons out (null):
    a bulk caller that needs only probabilities and buckets is spared their cost (TreeSHAP,
    several times the prediction's)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"rows": [_ROW_EXAMPLE]}]})
    rows: list[dict[str, Value]] = Field(min_length=1)
    reasons: bool = True


class Scored(BaseModel):
    user_id: str | None = None
    platform: str | None = None
    churn_probability: float
    bucket: str
    reasons: list[str] | None
    model: str | None = None
    model_version: str | None = None


class ScoreResponse(BaseModel):
    scores: list[Scored]
    ignored_columns: list[str]


class ScoreEventsRequest(BaseModel):
    """Adjust callback objects (as `lapse ingest` reads them from a callback log) for one or
    more subscribers, scored as of `as_of` (a date means its midnight UTC; left out: now)."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"as_of": "2026-02-01", "events": [_EVENT_EXAMPLE]}]}
    )
    as_of: str | None = None
    events: list[Any] = Field(min_length=1)


class RejectedEvent(BaseModel):
    index: int
    reason: str
    detail: str


class ScoreEventsResponse(BaseModel):
    as_of: str
    scores: list[Scored]
    rejected: list[RejectedEvent]
    not_active: list[dict[str, str]]
    duplicates: int


class LookupRequest(BaseModel):
    """Subscriber ids (the app's customer user ids) to look up in the newest rescore. Ids are
    text, as Adjust sends them: a JSON number (`7`) is refused with a 422 naming its index (send
    `"7"`), since a number is no id (`1e3`, or 12345678901234567890 read as a float, would look
    up someone else)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"user_ids": ["u-1842", "u-7"]}]})
    user_ids: list[str] = Field(min_length=1, max_length=10_000)


class LookupResponse(BaseModel):
    results: list[dict[str, Any]]


class ErrorAnswer(BaseModel):
    """Every refusal: what was wrong, naming the field (and row) at fault."""

    error: str


#: The refusals every endpoint documents (all answers are {"error": "..."}).
REFUSALS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorAnswer, "description": "A value the model cannot score (named)"},
    401: {"model": ErrorAnswer, "description": "Missing or wrong bearer token"},
    413: {"model": ErrorAnswer, "description": "Body over serving.max_body_mb"},
    422: {"model": ErrorAnswer, "description": "A malformed body (the field and row named)"},
}


app = FastAPI(
    title="Lapse churn scores",
    description="Churn probability, bucket and reasons per subscriber.",
    openapi_url=None,  # BentoML serves the OpenAPI page, with these routes in it
    docs_url=None,
    redoc_url=None,
)


@app.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A malformed body names the field (and row) at fault, and nothing is logged."""
    errors: dict[str, str] = {}
    for error in exc.errors():
        loc = [p for p in error.get("loc", ()) if p != "body"]
        if error.get("type") == "json_invalid":
            errors["body"] = f"malformed JSON ({error.get('ctx', {}).get('error', 'invalid')})"
            continue
        if loc and loc[-1] in _UNION_MEMBERS:  # one message per field, not one per type tried
            loc, message = loc[:-1], "expected a number, text, true/false or null"
        elif loc[:1] == ["user_ids"] and error.get("type") == "string_type":
            found = error.get("input")
            message = f"expected an id as text, got {shown(found)}"
            if isinstance(found, int) and not isinstance(found, bool):  # a float is no id
                message += f' (ids are strings: send "{found}")'
        else:
            message = error.get("msg", "invalid")
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
        errors.setdefault(where or "body", message)
    text = "; ".join(f"{where}: {message}" for where, message in list(errors.items())[:5])
    return JSONResponse({"error": text}, status_code=422)


_UNION_MEMBERS = {"float", "int", "bool", "str"}


@app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """FastAPI's own refusals (an unparseable body, a wrong method) in the same shape."""
    return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)


@app.exception_handler(LapseError)
async def _refused(request: Request, exc: LapseError) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=400)


class _Limits:
    """Pure ASGI middleware: the bearer token (when set) and the body size limit."""

    #: The probes and the OpenAPI page (Swagger at /, its spec at /docs.json) need no token.
    OPEN = ("/livez", "/readyz", "/healthz", "/docs.json", "/static_content")

    def __init__(self, app) -> None:
        self.app = app
        settings = Settings.load()
        token = settings.serving.token
        self.token = token.get_secret_value().encode() if token else None
        self.max_bytes = int(settings.serving.max_body_mb * 1024 * 1024)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        raw = scope.get("headers") or []
        headers = dict(raw)
        if self.token is not None and not (path == "/" or path.startswith(self.OPEN)):
            if sum(name == b"authorization" for name, _ in raw) > 1:  # no "last one wins"
                return await _reply(send, 400, "Authorization: sent more than once; send one")
            scheme, _, given = headers.get(b"authorization", b"").partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self.token):
                return await _reply(send, 401, "missing or wrong bearer token (Authorization)")
        length = headers.get(b"content-length")
        too_big = f"body over {self.max_bytes / 1024 / 1024:g} MB (serving.max_body_mb)"
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await _reply(send, 413, too_big)
        method = scope.get("method")
        direct = DIRECT.get(path) if method == "POST" else None
        if direct is not None or (length is None and method in ("POST", "PUT", "PATCH")):
            # the whole body, up to the limit (a chunked one has no Content-Length to check)
            chunks, size, more = [], 0, True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
                more = message.get("more_body", False)
                if size > self.max_bytes:
                    return await _reply(send, 413, too_big)
            body = b"".join(chunks)
            if direct is not None:
                return await (await _answer(direct, body))(scope, receive, send)
            sent = False

            async def replay():
                nonlocal sent
                if sent:
                    return await receive()
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}

            return await self.app(scope, replay, send)
        return await self.app(scope, receive, send)


async def _reply(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class CancellingTimeout(traffic.TimeoutMiddleware):
    """BentoML's per-request timeout (``traffic.timeout``; a 504 when no answer has started in
    time), with its timer cancelled once the answer starts.

    BentoML's own never cancels its ``loop.call_later``: every request left a live timer for
    the whole timeout (120 s), holding the request's future and context (its OpenTelemetry span:
    ~20 objects). At 400 requests/s that is ~1M live objects, all promoted to the oldest GC
    generation, which every full collection walks: measured in the worker, 93,000 of them after
    16 s of load and a 150 ms full collection over them (gc.freeze cannot help: they are live).
    The timer also runs in an empty context, so nothing of the request stays reachable from it.
    """

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        timer = loop.call_later(
            self.timeout, self._set_timer_out, waiter, context=contextvars.Context()
        )

        async def started(message) -> None:
            if not waiter.done():
                waiter.set_result(None)
                timer.cancel()
            await send(message)

        answer = asyncio.ensure_future(self.app(scope, receive, started))
        try:
            await waiter
        except TimeoutError:
            if answer.cancel():
                message = f"Not able to process the request in {self.timeout} seconds"
                await JSONResponse({"error": message}, status_code=504)(scope, receive, send)
        else:
            await answer
        finally:
            timer.cancel()


# BentoML builds its middleware stack from this module attribute when the worker starts, after
# importing this module: the service gets the timeout above instead of the leaking one.
traffic.TimeoutMiddleware = CancellingTimeout


def _workers() -> int:
    """serving.workers; 1 while `lapse serve --build` imports this module to build the Bento
    (its LAPSE_BENTO_MODEL is no setting, and the settings refuse it)."""
    if os.environ.get(BENTO_MODEL_ENV):
        return 1
    return Settings.load().serving.workers


def _telemetry() -> dict[str, Any]:
    """BentoML's options for serving.telemetry: off, no metrics middleware and no tracing span
    for any path (a third of a one-row /score's CPU between them, measured); on (and while
    building a Bento), BentoML's defaults."""
    if os.environ.get(BENTO_MODEL_ENV) or Settings.load().serving.telemetry:
        return {}
    return {"metrics": {"enabled": False}, "tracing": {"excluded_urls": ["/"]}}  # "/": every path


@bentoml.service(
    name="lapse",
    workers=_workers(),
    traffic={"timeout": 120},
    logging={"access": {"enabled": False}},  # an access log costs a fifth of the throughput
    **_telemetry(),
)
@bentoml.asgi_app(app, path="/")
class LapseChurn:
    """Scores, buckets and reasons from feature rows, from Adjust events, or by subscriber id."""

    if BENTO_MODEL:  # a Bento carries its model in BentoML's store
        bento_model = bentoml.models.BentoModel(BENTO_MODEL)

    def __init__(self) -> None:
        self.settings = Settings.load()
        self.served = None  # /readyz fails until the model is loaded and warmed up
        if BENTO_MODEL:
            stored = self.bento_model
            carried = stored.path_of("mlflow_model")
            served = jobs.served_from_path(carried, stored.info.metadata)
        else:
            served = jobs.load_served_model(self.settings)
        self.scores = jobs.ScoresCache(
            jobs.scores_folder(self.settings), self.settings.serving.lookup_refresh_s
        )
        self._warm_up(served)
        self.served = served
        log.info("serving %s", self.served.info.label)
        # the loaded libraries and model are permanent: keep them out of every full collection
        # (a gen-2 pass over them stalled requests for a quarter of a second)
        gc.collect()
        gc.freeze()
        self._stop = threading.Event()
        if self.settings.serving.refresh_s:
            threading.Thread(target=self._refresh, daemon=True, name="lapse-refresh").start()

    def __is_ready__(self) -> bool:
        return self.served is not None

    def _warm_up(self, served: jobs.ServedModel) -> None:
        """Take every endpoint's path once before ``served`` answers (``jobs.warm_up``), and the
        edge's own first uses (request parsing, JSON answers): one line says what was warmed,
        one warning what failed (the service starts anyway: each path still answers, its first
        request pays the one-time costs)."""
        warmed = jobs.warm_up(self.settings, served, self.scores.latest)
        failed = dict(warmed.failed)
        try:
            callbacks, as_of = jobs.warm_up_callbacks(self.settings)
            row = {"user_id": jobs.WARM_UP_ID, **dict.fromkeys(served.lean.features)}
            _body(orjson.dumps({"rows": [row]}), ScoreRequest)
            _body(orjson.dumps({"as_of": str(as_of), "events": callbacks}), ScoreEventsRequest)
            _body(orjson.dumps({"user_ids": [jobs.WARM_UP_ID]}), LookupRequest)
            _json({"scores": [{"churn_probability": 0.5, "reasons": ["x"]}]})
        except Exception as exc:  # noqa: BLE001 - slower once, not broken
            failed["request parsing"] = f"{type(exc).__name__}: {exc}"
        done = ", ".join(warmed.done) or "nothing"
        log.info("warmed up %s in %.0f ms", done, warmed.seconds * 1000)
        if failed:
            what = "; ".join(f"{path}: {why}" for path, why in failed.items())
            log.warning(
                "warm-up failed for %s (the service starts; the first such request pays the "
                "one-time costs): %s",
                ", ".join(failed),
                what[:1000],
            )

    def _refresh(self) -> None:
        """Swap to a new champion when the alias moves, once it is warmed up; requests in
        flight keep the old one."""
        interval = self.settings.serving.refresh_s
        while not self._stop.wait(interval):
            try:
                if BENTO_MODEL:  # a Bento serves the model it carries
                    return
                info = model_info(self.settings.mlflow.tracking_uri, self.served.info.uri)
                if info.version and info.version != self.served.info.version:
                    served = jobs.load_served_model(self.settings, self.served.info.uri)
                    self._warm_up(served)
                    self.served = served
                    log.info("now serving %s", self.served.info.label)
            except Exception as exc:  # noqa: BLE001 - keep serving the model we have
                log.warning("model refresh failed, keeping %s: %s", self.served.info.label, exc)


# The endpoints are module coroutines, not methods: BentoML hands a method its instance through
# a synchronous FastAPI dependency, which FastAPI runs in the thread pool on every request (a
# sixth of a one-row request's CPU); bentoml.get_current_service() is a plain call. A small
# answer is computed on the event loop (a thread hand-off costs more than a one-row score); big
# ones go to the thread pool so that the loop keeps reading other requests. Answers are
# serialised once by orjson and returned as a Response, which FastAPI passes on as it is
# (no re-validation against `response_model`, which documents it, and no jsonable_encoder).


def _service() -> LapseChurn:
    """The service instance of this worker."""
    return bentoml.get_current_service()


M = TypeVar("M", bound=BaseModel)


def _documented(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI request body of an endpoint that reads its body itself (``_body``): the
    model's JSON schema, with its examples, as FastAPI would have documented it."""
    schema = model.model_json_schema()
    return {"requestBody": {"required": True, "content": {JSON: {"schema": schema}}}}


def _body(raw: bytes, model: type[M]) -> M:
    """The request's JSON body validated straight from its bytes by pydantic's own parser: half
    the CPU of FastAPI's json.loads then validating the Python objects (1,000 rows: 21 against
    45 ms). A malformed body is the same 422 naming the field and row."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None


def _post(path: str, request: type[BaseModel], response: type[BaseModel]):
    """A POST route whose body is read from its bytes, documented on the OpenAPI page with
    ``request``'s schema and examples, ``response`` and the refusals."""
    return app.post(
        path, responses=REFUSALS, response_model=response, openapi_extra=_documented(request)
    )


async def _answer(endpoint, raw: bytes) -> Response:
    """A /score or /lookup answer from the body's bytes, taken by ``_Limits`` before any
    routing: the router, BentoML's request context and FastAPI's request handling cost as much
    CPU as the scoring of one row (measured in the worker). Refusals are the answers the
    exception handlers give on the routes."""
    try:
        return await endpoint(raw)
    except RequestValidationError as exc:
        return await _invalid(None, exc)
    except LapseError as exc:
        return await _refused(None, exc)


@_post("/score", ScoreRequest, ScoreResponse)
async def score(request: Request) -> Response:
    """Churn probability (calibrated), bucket and up to three reasons per feature row."""
    return await _score(await request.body())


async def _score(raw: bytes) -> Response:
    body = _body(raw, ScoreRequest)
    service = _service()
    max_rows, served = service.settings.serving.max_rows, service.served
    args = (served, body.rows, max_rows, body.reasons)
    if len(body.rows) <= INLINE_ROWS:
        result = jobs.score_rows(*args)
    else:
        result = await run_in_threadpool(jobs.score_rows, *args)
    return _json({"scores": result.results, "ignored_columns": result.ignored})


@_post("/score_events", ScoreEventsRequest, ScoreEventsResponse)
async def score_events(request: Request) -> Response:
    """Scores of the subscribers whose Adjust callbacks are given, as `lapse rescore
    --as-of` would write them for the same events; refused callbacks come back with their
    index and reason, the rest are scored."""
    arrived = datetime.now(UTC)
    # read from the bytes whatever the Content-Type, as /score and /lookup are (a body model
    # would refuse a `curl -d` body, sent as a form, as "not an object")
    body = _body(await request.body(), ScoreEventsRequest)
    as_of = body.as_of if body.as_of is not None else arrived
    service = _service()
    result = await run_in_threadpool(
        jobs.score_events, service.settings, service.served, body.events, as_of, now=arrived
    )
    return _json(
        {
            "as_of": result.as_of.isoformat(),
            "scores": result.results,
            "rejected": [vars(r) for r in result.rejected],
            "not_active": result.inactive,
            "duplicates": result.duplicates,
        }
    )


@_post("/lookup", LookupRequest, LookupResponse)
async def lookup(request: Request) -> Response:
    """Each subscriber's latest score from the newest rescore (or `scored: false`)."""
    return await _lookup(await request.body())


async def _lookup(raw: bytes) -> Response:
    body = _body(raw, LookupRequest)
    return _json({"results": jobs.lookup(_service().scores.get(), body.user_ids)})


@app.get("/metadata", responses={401: REFUSALS[401]})
async def metadata() -> Response:
    """The model that answers: version, run, metrics, features, buckets, definition."""
    service = _service()
    return _json(jobs.metadata(service.served, service.scores.get()))


#: /score requests up to this many rows are scored on the event loop (~1 ms), bigger ones in
#: the thread pool.
INLINE_ROWS = 20


#: POST paths ``_Limits`` answers itself from the body (``_answer``); their routes above
#: document them in the OpenAPI page (and would answer the same).
DIRECT = {"/score": _score, "/lookup": _lookup}


def _json(payload: dict) -> Response:
    return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), media_type=JSON)


LapseChurn.add_asgi_middleware(_Limits)

__all__ = ["LapseChurn", "app"]
