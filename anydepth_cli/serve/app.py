"""The HTTP API and web page of `anydepth serve` (FastAPI): depth and point clouds for uploaded photos, through
the model's streaming engine."""

from __future__ import annotations

import asyncio
import hmac
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Callable, Literal, Optional

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from anydepth_cli.errors import AnyDepthError, InputError
from anydepth_cli.inference.engine import Full
from anydepth_cli.io.images import ImageTooLarge
from anydepth_cli.serve.encode import MAP_FORMATS, Body, Scratch, encode_map, encode_point_cloud
from anydepth_cli.serve.errors import ApiError, error_response
from anydepth_cli.serve.gallery import Gallery
from anydepth_cli.serve.metrics import Metrics
from anydepth_cli.serve.model import Job, ServedModel

STATIC = Path(__file__).parent / "static"
DEFAULT_MAX_BODY = 64 * 1024 * 1024
CLIENT_LEFT = 499
"""The status recorded (never sent) for a request whose client hung up (nginx's convention)."""


@dataclass(frozen=True)
class Limits:
    """What one request may ask: its body size, and how long it may wait for its answer."""

    max_body: int = DEFAULT_MAX_BODY
    timeout: float = 60.0


class BodyTooLarge(Exception):
    """The request body went past the cap while it was being received."""


class _ClientLeft(Exception):
    """The client hung up before its answer was ready."""


class BodyLimit:
    """Refuses bodies over `limit` bytes with 413: at once when Content-Length says so, else as they arrive."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            status, text = (413, self._message()) if declared.isdigit() else (400, "bad Content-Length")
            await error_response(status, text, {"Connection": "close"})(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise BodyTooLarge(self._message())
            return message

        await self.app(scope, limited, send)

    def _message(self) -> str:
        return f"the body is over the limit of {self.limit} bytes"


def create_app(model: ServedModel, metrics: Metrics, token: str | None = None, gallery: Gallery | None = None,
               limits: Limits = Limits(), on_failure: Callable[[], None] = lambda: None) -> FastAPI:
    """The ASGI app serving `model` (opened and warmed when the app starts, closed when it stops)."""
    scratch = Scratch()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        model.start(on_failure)
        try:
            yield
        finally:
            await asyncio.to_thread(model.close)
            scratch.close()

    app = FastAPI(title="anydepth serve", summary="Relative depth for photos, from a model kept loaded.",
                  docs_url=None, redoc_url=None, lifespan=lifespan)
    app.add_middleware(BodyLimit, limit=limits.max_body)
    metrics.instrument(app, lambda: model.in_flight)
    authorized = Depends(_bearer_check(token))
    _add_error_handlers(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        vendor = "/static/vendor/swagger-ui"
        return get_swagger_ui_html(openapi_url="/openapi.json", title="anydepth serve",
                                   swagger_js_url=f"{vendor}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{vendor}/swagger-ui.css", swagger_favicon_url="/static/favicon.svg",
                                   swagger_ui_parameters={"validatorUrl": None})  # no badge from swagger.io

    @app.get("/healthz", summary="The server is alive")
    async def healthz() -> dict:
        return {"alive": True}

    @app.get("/readyz", summary="The model is loaded and warm (503 before)")
    async def readyz() -> dict:
        _check_ready(model)
        return {"ready": True, "model": model.label}

    @app.get("/metrics", summary="Prometheus metrics", dependencies=[authorized])
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models", summary="The model this server runs", dependencies=[authorized])
    async def models() -> dict:
        _check_ready(model)
        predictor = model.predictor
        return {"models": [{"name": model.label, "output": predictor.output_kind, "input_size": predictor.input_size,
                            "max_depth": getattr(predictor, "max_depth", None),
                            "device": str(predictor.device), "max_batch": model.batching.max_batch}],
                "token_required": token is not None, "gallery": gallery is not None}

    @app.post("/v1/depth", summary="The depth (or disparity) map of one photo", dependencies=[authorized],
              openapi_extra=_IMAGE_BODY)
    async def depth(request: Request, format: Literal[MAP_FORMATS] = Query("npy", description="npy (float32), png16, exr, color (the coloured PNG) or json (kind, min, max, size)"),  # noqa: A002
                    cmap: str = Query("inferno", description="Colour map of `color`"),
                    invert: bool = Query(False, description="`color`: far bright"),
                    tile: Literal["auto", "off"] = Query("auto", description="auto: large photos run by tiles, as `predict --tile auto`; off: one whole pass")) -> Response:
        if format == "color":
            _check_cmap(cmap)
        encode = lambda image, values: encode_map(values, model.predictor.output_kind, format, model.label,  # noqa: E731
                                                  scratch, cmap, invert)
        return await _answer(request, model, encode, limits, tile=tile == "auto")

    @app.post("/v1/pointcloud", summary="The coloured point cloud of one photo (binary PLY)",
              dependencies=[authorized], openapi_extra=_IMAGE_BODY)
    async def pointcloud(request: Request,
                         focal: Optional[float] = Query(None, gt=0, description="Focal length in pixels"),
                         fov: Optional[float] = Query(None, gt=0, lt=180, description="Horizontal field of view, degrees \\[default: EXIF, else 60]")) -> Response:
        from anydepth_cli.pipelines.geometry import CameraOptions, PointCloudOptions

        settings = PointCloudOptions(fov=fov, focal=focal)
        camera = CameraOptions(fov, focal, model.label, getattr(model.predictor, "max_depth", None), cloud=True)

        def encode(image, values) -> Body:  # noqa: ANN001
            return encode_point_cloud(image, values, model.predictor.output_kind, settings, camera, data, scratch)

        data = await _image_bytes(request)
        return await _answer(request, model, encode, limits, data)

    if gallery is not None:
        gallery.mount(app, authorized)
    return app


_IMAGE_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "properties": {"image": {"type": "string", "format": "binary"}},
                                       "required": ["image"]}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
}}}


def _bearer_check(token: str | None) -> Callable:
    scheme = HTTPBearer(auto_error=False, description="Authorization: Bearer TOKEN (when the server has a token)")
    expected = token.encode() if token else b""

    async def check(credentials: Optional[HTTPAuthorizationCredentials] = Depends(scheme)) -> None:
        if token is None:
            return
        given = credentials.credentials.encode() if credentials is not None else b""
        if not hmac.compare_digest(given, expected):
            raise ApiError(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})

    return check


def _check_ready(model: ServedModel) -> None:
    if not model.ready.is_set():
        raise ApiError(503, "the model is loading", {"Retry-After": "5"})


def _check_cmap(cmap: str) -> None:
    from anydepth_cli.io.writers import available_cmaps

    if cmap not in available_cmaps():
        raise ApiError(422, f"unknown cmap {cmap!r}")


async def _image_bytes(request: Request) -> bytes:
    """The uploaded image: the multipart field `image`, or the whole body."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        async with request.form(max_files=1, max_fields=16) as form:
            upload = form.get("image")
            if not isinstance(upload, UploadFile):
                raise ApiError(422, "the multipart body needs a file field named 'image'")
            return await upload.read()
    return await request.body()


async def _answer(request: Request, model: ServedModel, encode: Callable, limits: Limits,
                  data: bytes | None = None, tile: bool = True) -> Response:
    """Run one uploaded image through the model and answer with its encoded body."""
    _check_ready(model)
    if data is None:
        data = await _image_bytes(request)
    job = Job(data, encode, tile)
    try:
        future = model.submit(job)
    except Full:
        raise ApiError(503, "the queue is full", {"Retry-After": "1"}) from None
    except RuntimeError:  # the engine is closed: the server is stopping
        raise ApiError(503, "the server is stopping", {"Retry-After": "5"}) from None
    waiting = asyncio.wrap_future(future)
    gone = asyncio.ensure_future(_disconnected(request))
    done, _ = await asyncio.wait({waiting, gone}, timeout=limits.timeout, return_when=asyncio.FIRST_COMPLETED)
    gone.cancel()
    if waiting not in done:
        job.abandoned.set()
        waiting.cancel()
        if gone in done:
            raise _ClientLeft
        raise ApiError(504, f"no answer within {limits.timeout:g} s")
    try:
        body: Body = waiting.result()
    except ImageTooLarge as exc:
        raise ApiError(413, str(exc)) from None
    except InputError as exc:
        raise ApiError(415, str(exc)) from None
    except AnyDepthError as exc:
        raise ApiError(422, str(exc)) from None
    except asyncio.CancelledError:
        raise ApiError(503, "the server is stopping", {"Retry-After": "5"}) from None
    return Response(body.content, media_type=body.media_type, headers=body.headers)


async def _disconnected(request: Request) -> None:
    """Returns when the client hangs up (its body has been read by then)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _add_error_handlers(app: FastAPI) -> None:
    """Every error answers one line of JSON, never a traceback."""

    async def api_error(_: Request, exc: ApiError) -> Response:
        return error_response(exc.status, exc.message, exc.headers)

    async def too_large(_: Request, exc: BodyTooLarge) -> Response:
        return error_response(413, str(exc), {"Connection": "close"})

    async def client_left(_: Request, __: Exception) -> Response:
        return Response(status_code=CLIENT_LEFT)

    async def http_error(_: Request, exc: HTTPException) -> Response:
        return error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    async def bad_parameter(_: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(f"{'.'.join(str(part) for part in error['loc'][1:])}: {error['msg']}"
                             for error in exc.errors())
        return error_response(422, problems or "bad request parameters")

    async def unexpected(_: Request, __: Exception) -> Response:
        return error_response(500, "internal error (see the server log)")

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(BodyTooLarge, too_large)
    app.add_exception_handler(ClientDisconnect, client_left)
    app.add_exception_handler(_ClientLeft, client_left)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, bad_parameter)
    app.add_exception_handler(Exception, unexpected)
