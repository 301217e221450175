"""The explorer's web app (FastAPI): the page, its assets and a JSON API, documented at ``/openapi.json``.

Routes (a contract: scripts rely on these; every ``/api`` route takes ``?run=NAME`` when several runs are served):

===============================  ====================================================================
``GET /``                        the page (``static/index.html``; its script and style from ``/static/``)
``GET /api/runs``                ``{"runs": [{"name", "model", "dataset", "latent_dim"}], "default": name,
                                 "reports": [...]}`` (``reports``: the served folder's, see ``/reports/``)
``GET /api/info``                ``{"model", "latent_dim", "dataset", "classes", "map", "stats", "limits", ...}``;
                                 ``"warnings"``: sentences on the metrics of its evaluation.json at chance level
``GET /api/points``              ``{"points": [{"x", "y", "label", "index"}, ...]}``: the test codes' 2-D map
``GET /api/items/{index}``       test item ``index``: ``{"image", "reconstruction", "z", "label", "class"}``; for a
                                 multimodal run also ``"word"`` (decoded from the image's code), ``"text"`` (the
                                 item's own) and ``"nearest_recordings"``: ``[{"id", "digit", "row", "recording",
                                 "distance"}, ...]`` (with audio: the test recordings nearest the image's code)
``GET /api/images/{index}``      test item ``index``'s image as a PNG (the map's hover preview)
``POST /api/encode``             ``{"index": int}`` -> ``{"z": [float, ...]}``
``POST /api/decode``             ``{"z": [float, ...]}`` (latent_dim values) -> ``{"image": "data:image/png;base64,..."}``
                                 (a multimodal run adds the code's ``"word"`` and ``"nearest_recordings"``)
``POST /api/interpolate``        ``{"a": int, "b": int, "steps": int}`` -> ``{"z": [[...], ...], "images": [...]}``
``POST /api/sample``             ``{"n": int, "seed": int | null}`` -> ``{"images": [...]}`` (generative models)
``POST /api/text``               ``{"text": str, "n": int, "seed": int | null}`` -> ``{"text", "word", "z": [[...]],
                                 "images": [...], "unknown": [...]}``: images generated from a text (multimodal
                                 runs with text; 400 for the others): the first decoded from the text's code, the
                                 rest from codes drawn from q(z | text); ``word``: what the text decoder reads back;
                                 ``unknown``: the text's words no training text holds; with audio also the
                                 ``"nearest_recordings"`` of the text's code
``GET /api/recordings``          ``{"placement", "recordings": [{"id", "digit", "row", "recording", "x", "y"}]}``:
                                 a multimodal run's test recordings and where their codes lie on the map (400
                                 without audio)
``GET /api/recordings/{index}``  recording ``index``: ``{"mfcc", "reconstruction", "image", "word", "z", ...}``: its
                                 MFCC picture, the audio decoder's picture of its code, the image and word decoded
                                 from its code
``GET /files/{name}``            one of the run's own files listed in ``/api/info``'s ``files`` (its report, figures)
``GET /reports/{name}``          an HTML file of the served folder of runs (a comparison report), listed in
                                 ``/api/runs``'s ``reports``; ``/reports/{run}/{name}``: a run's file, for its links
===============================  ====================================================================

An index past the end (a test item, a recording) is a 422 on every route, with the same sentence
(``index 1000 is out of range: the test set has 1000 items (0 to 999)``), as are a negative or non-integer one.

A multimodal run is shown through its image modality: the map, ``/api/encode`` and ``/api/decode`` are about
its images' codes (``/api/info``'s ``map_modality`` says which; ``modalities``, ``text`` and ``recordings``
describe the rest).

Every request that reaches the app is validated; a bad one gets a JSON ``{"detail": ...}`` with a 4xx status
and no traceback. (A request that is not valid HTTP, e.g. a malformed Content-Length or Host header, is
answered by uvicorn itself, before the app, with a plain-text 400.)
Request bodies are bounded (:data:`LIMITS`); no part of a request path ever becomes a file-system path:
assets are looked up by name in a table made when the app starts, a run's files by name in the listing of
its folder (plain files directly in it), runs by name among those served. Run files are sent with a
sandboxing content policy (no script), the page with one that allows nothing from elsewhere.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path as PathParam, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from ..data import Dataset
from ..data.multimodal import ALPHABET, TEXT_LENGTH
from ..errors import AelabError
from ..runfolder import CONFIG
from .views import RunView, find_runs

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".png": "image/png", ".json": "application/json",
                 ".jsonl": "text/plain; charset=utf-8", ".csv": "text/csv; charset=utf-8",
                 ".md": "text/plain; charset=utf-8"}
LIMITS = {
    "max_abs": 1e4,  # |z| of a code sent to /api/decode; trained codes are far inside this
    "max_latent": 4096,  # values in one code before its length is checked against the run's latent_dim
    "max_body": 256 * 1024,  # bytes of a request body
    "max_steps": 64,  # codes in one interpolation
    "max_samples": 64,  # images in one /api/sample or /api/text answer
    "max_text": TEXT_LENGTH,  # characters of a text sent to /api/text
}
# the characters a text may hold (the text modality's alphabet), as a JSON-schema pattern
TEXT_PATTERN = "^[" + "".join("\\" + c if c in "-\\]^[" else c for c in ALPHABET) + "]*$"
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                                 b"object-src 'none'; frame-ancestors 'none'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
# A run's own files (its self-contained report: inline CSS, embedded PNGs) are shown as documents with no
# script at all, in a sandbox, whatever they hold; this replaces the page's policy for them.
RUN_FILE_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; sandbox; frame-ancestors 'none'"

Coordinate = Annotated[float, Field(ge=-LIMITS["max_abs"], le=LIMITS["max_abs"], allow_inf_nan=False)]
Index = Annotated[int, Field(ge=0, le=2**31 - 1)]


# ---------------------------------------------------------------------------------------------- schemas
class StrictRequest(BaseModel):
    """A request body: an unknown field is refused, and so is a value of another type (no "1" for 1)."""
    model_config = ConfigDict(extra="forbid", strict=True)


class DecodeRequest(StrictRequest):
    z: list[Coordinate] = Field(min_length=1, max_length=LIMITS["max_latent"],
                                description="one code, latent_dim values")


class EncodeRequest(StrictRequest):
    index: Index = Field(description="a test item, 0 <= index < test_count")


class InterpolateRequest(StrictRequest):
    a: Index = Field(description="the test item at the start")
    b: Index = Field(description="the test item at the end")
    steps: int = Field(8, ge=2, le=LIMITS["max_steps"], description="codes on the line, both ends included")


class SampleRequest(StrictRequest):
    n: int = Field(8, ge=1, le=LIMITS["max_samples"])
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="the same seed gives the same images")


class TextRequest(StrictRequest):
    text: str = Field(min_length=1, max_length=LIMITS["max_text"], pattern=TEXT_PATTERN,
                      description="a word or a few: letters, digits, spaces and ()-.,'")
    n: int = Field(8, ge=1, le=LIMITS["max_samples"], description="images: the text's code, then codes drawn "
                                                                   "from q(z | text)")
    seed: int | None = Field(0, ge=0, le=2**32 - 1, description="the same seed gives the same images")


class ImageAnswer(BaseModel):
    image: str = Field(description="a PNG as a data: URL")


class CodeAnswer(BaseModel):
    z: list[float]


class Point(BaseModel):
    x: float
    y: float
    label: int = Field(description="the class index, -1 when the dataset has no labels")
    index: int = Field(description="the test item")


class PointsAnswer(BaseModel):
    points: list[Point]


class RecordingEntry(BaseModel):
    id: int = Field(description="the recording, for /api/recordings/{id}")
    digit: int = Field(description="the digit spoken")
    row: int = Field(description="a test item paired with this recording")
    recording: int | None = Field(description="its index in the FSDD file, when known")


class Recording(RecordingEntry):
    distance: float = Field(description="from the code asked about, in the shared latent space")


class DecodeAnswer(ImageAnswer):
    word: str | None = Field(None, description="multimodal runs with text: the text decoded from the code")
    nearest_recordings: list[Recording] | None = Field(
        None, description="multimodal runs with audio: the test recordings whose codes lie nearest the code")


class MapRecording(RecordingEntry):
    x: float
    y: float


class RecordingsAnswer(BaseModel):
    placement: str = Field(description="'projected' (a linear map) or 'nearest images' (each at the mean "
                                        "position of the image codes nearest its code)")
    recordings: list[MapRecording]


class RecordingAnswer(RecordingEntry):
    z: list[float]
    mfcc: str = Field(description="its MFCCs as a PNG heat-map: time left to right, coefficient 1 at the bottom")
    reconstruction: str = Field(description="the audio decoder's MFCCs for its code, drawn the same way")
    image: str = Field(description="the image decoded from its code")
    word: str | None = Field(None, description="with text: the text decoded from its code")


class ItemAnswer(BaseModel):
    index: int
    label: int
    class_: str | None = Field(alias="class")
    image: str
    reconstruction: str
    z: list[float]
    word: str | None = Field(None, description="multimodal runs with text: the text decoded from the image's code")
    text: str | None = Field(None, description="multimodal runs with text: the item's own text")
    nearest_recordings: list[Recording] | None = Field(
        None, description="multimodal runs with audio: the test recordings whose codes lie nearest the image's")


class ImagesAnswer(BaseModel):
    images: list[str]


class InterpolateAnswer(ImagesAnswer):
    z: list[list[float]]


class TextAnswer(InterpolateAnswer):
    text: str
    word: str = Field(description="what the text decoder writes for the text's code")
    unknown: list[str] = Field(description="the text's words that no training text holds (still read, letter "
                                           "by letter)")
    nearest_recordings: list[Recording] | None = Field(
        None, description="with audio: the test recordings whose codes lie nearest the text's code")


class RunSummary(BaseModel):
    name: str
    model: str
    dataset: str
    latent_dim: int


class RunsAnswer(BaseModel):
    runs: list[RunSummary]
    default: str
    reports: list[str] = Field(description="HTML files of the served folder (a comparison report), at /reports/")


class InfoAnswer(RunSummary):
    model_config = ConfigDict(extra="allow")
    run: str
    classes: list[str] | None
    input_shape: list[int]
    can_sample: bool
    test_count: int
    map: dict
    stats: dict
    limits: dict


class ErrorAnswer(BaseModel):
    detail: str | list


ERRORS = {code: {"model": ErrorAnswer} for code in (400, 404, 413, 422)}


# ---------------------------------------------------------------------------------------------- middleware
class BodySizeLimit:
    """Pure ASGI middleware: a request body over ``max_body`` bytes gets 413, also a chunked one without a
    length (counted as it is read); a Content-Length that is not a number gets 400."""

    def __init__(self, app, max_body: int):
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and not length.isdigit():
            return await _send_json(send, 400, "the Content-Length header is not a number")
        if length is not None and int(length) > self.max_body:
            return await _send_json(send, 413, f"the request body is over {self.max_body:,} bytes")
        seen = 0

        async def bounded_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body:  # FastAPI passes an HTTPException from reading the body through as it is
                raise HTTPException(413, f"the request body is over {self.max_body:,} bytes")
            return message

        await self.app(scope, bounded_receive, send)


class SecurityHeaders:
    """Pure ASGI middleware: adds :data:`SECURITY_HEADERS` to every answer, except a header the route set itself
    (a run's file keeps its own content policy)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = message.get("headers", [])
                present = {name.lower() for name, _ in headers}
                message = {**message, "headers": [*headers, *(h for h in SECURITY_HEADERS if h[0] not in present)]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _send_json(send, status: int, detail: str) -> None:
    """Answer ``{"detail": detail}`` with ``status`` straight from a middleware."""
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------------------------------------- the app
RunName = Annotated[str | None, Query(max_length=200, description="the run's name (see /api/runs); "
                                                                  "default: the first")]


def view_of(request: Request, run: RunName = None) -> RunView:
    """The run a request asks for with ``?run=NAME`` (a key of the served runs, never a path), else the default."""
    views = request.app.state.views
    if run is None:
        return views[request.app.state.default]
    if run not in views:
        raise HTTPException(404, "no run of that name is served; see /api/runs")
    return views[run]


View = Annotated[RunView, Depends(view_of)]


def load_views(path: str | Path, data: Dataset | None = None, method: str = "tsne", device: str = "auto",
               log=None, audio_data: str | None = None) -> dict[str, RunView]:
    """A :class:`RunView` of the run folder ``path``, or of every run folder directly inside it, by name.
    In a folder of runs, a run that cannot be shown (no weights yet, a dataset aelab cannot load) is left
    out with a warning; an error only when none can."""
    cache: dict = {}
    views, skipped = {}, []
    run_dirs = find_runs(path)
    for run_dir in run_dirs:
        if log:
            log(f"loading {run_dir} ...")
        try:
            views[run_dir.name] = RunView.load(run_dir, data=data, method=method, device=device, cache=cache, log=log,
                                               audio_data=audio_data)
        except AelabError as exc:
            if len(run_dirs) == 1:
                raise
            skipped.append(str(exc))
            logger.warning("left out: %s", exc)
    if not views:
        raise AelabError(f"none of the {len(run_dirs)} runs in {path} can be shown; the first: {skipped[0]}")
    return views


def create_app(path: str | Path | None = None, *, views: dict[str, RunView] | None = None,
               data: Dataset | None = None, method: str = "tsne", device: str = "auto",
               allowed_hosts: list[str] | None = None, audio_data: str | None = None, log=logger.info) -> FastAPI:
    """The explorer for the run folder ``path`` (or a folder of runs: the page then offers a picker).

    ``data``: the dataset the run was trained on, for a run whose dataset aelab cannot load by name.
    ``method``: the map of the test codes, "tsne" or "pca" (computed once and cached in the run folder).
    ``audio_data``: the FSDD MFCC file ``digits.npz`` for multimodal runs with audio, when their config does not
    say where it is and it is not in ``$AELAB_DATA_DIR/fsdd-mfcc/`` (as ``aelab train --audio-data``).
    ``allowed_hosts``: Host headers answered (others get 400); None answers any (the command line passes
    the loopback names when it listens on loopback, which keeps other web sites' pages from reaching it).
    ``views``: the runs to serve, already loaded (by name), instead of ``path``.
    """
    if views is None:
        if path is None:
            raise AelabError("create_app needs a run folder (path) or views")
        views = load_views(path, data=data, method=method, device=device, log=log, audio_data=audio_data)
    if not views:
        raise AelabError("create_app needs at least one run to serve")
    app = FastAPI(title="aelab latent-space explorer", version="1", docs_url=None, redoc_url=None,
                  description="Browse a trained autoencoder's latent space: the map of the test codes, "
                              "decoding of any code, interpolations and samples.")
    app.state.views, app.state.default = views, next(iter(views))
    # a folder of runs (not a run itself): its own HTML files (a comparison report) are linked from the page
    app.state.folder = Path(path) if path is not None and not (Path(path) / CONFIG).is_file() else None
    app.state.assets = {p.name: p.read_bytes() for p in STATIC.iterdir() if p.is_file() and p.suffix in CONTENT_TYPES}
    app.add_middleware(BodySizeLimit, max_body=LIMITS["max_body"])
    app.add_middleware(SecurityHeaders)  # added last, so it wraps the other: its 413 and 400 get the headers too
    if allowed_hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)
    _add_error_handlers(app)
    app.include_router(page_routes)
    app.include_router(api_routes)
    return app


def checked_index(view: RunView, index: int) -> int:
    """``index`` when the run has such a test item, else a 422 that says the range: one rule for every route."""
    return in_range(index, view.count, "index", "items")


def in_range(index: int, count: int, what: str, things: str) -> int:
    """``index`` when ``0 <= index < count``, else a 422 with the sentence every route uses."""
    if not 0 <= index < count:
        raise HTTPException(422, f"{what} {index} is out of range: the test set has {count} {things} "
                                 f"(0 to {count - 1})")
    return index


def audio_of(view: RunView) -> RunView:
    """``view`` when its run has recordings, else a 400 that says which runs have."""
    if not view.has_audio:
        raise HTTPException(400, f"the run {view.name} has no audio modality; serve a multimodal run trained with "
                                 f"audio (--modalities image,audio,text)")
    return view


def report_files(folder: Path | None) -> list[str]:
    """The HTML files directly in the served folder of runs (plain files, not links), by name."""
    if folder is None:
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_file() and not p.is_symlink() and p.suffix == ".html")


# ---------------------------------------------------------------------------------------------- the routes
ItemIndex = Annotated[int, PathParam(ge=0, le=2**31 - 1)]
page_routes = APIRouter(include_in_schema=False)  # the page, its assets and the run's files
api_routes = APIRouter(responses=ERRORS)  # the JSON API, in /openapi.json


@page_routes.get("/", response_class=HTMLResponse)
def page(request: Request) -> Response:
    return Response(request.app.state.assets["index.html"], media_type=CONTENT_TYPES[".html"])


@page_routes.get("/static/{name}")
def static(request: Request, name: str) -> Response:
    assets = request.app.state.assets
    if name not in assets:  # a key of the table made at start: never a path built from the request
        raise HTTPException(404, "no such asset")
    return Response(assets[name], media_type=CONTENT_TYPES[Path(name).suffix])


@page_routes.get("/files/{name}")
def run_file(view: View, name: str) -> Response:
    return _run_file(view, name)


def _run_file(view: RunView, name: str) -> Response:
    if name not in view.files():  # a name from the folder's own listing: never a path built from the request
        raise HTTPException(404, "no such file in this run")
    return Response((view.path / name).read_bytes(), media_type=CONTENT_TYPES[Path(name).suffix],
                    headers={"content-security-policy": RUN_FILE_POLICY})


@page_routes.get("/reports/{name}")
def folder_report(request: Request, name: str) -> Response:
    folder = request.app.state.folder
    if name not in report_files(folder):  # a name from the folder's own listing, as for a run's files
        raise HTTPException(404, "no such report in the served folder")
    return Response((folder / name).read_bytes(), media_type=CONTENT_TYPES[".html"],
                    headers={"content-security-policy": RUN_FILE_POLICY})


@page_routes.get("/reports/{run}/{name}")
def folder_run_file(request: Request, run: str, name: str) -> Response:
    """A run's file under the folder report's address, so the report's relative links (``conv/report.html``)
    lead somewhere."""
    return _run_file(view_of(request, run), name)


@api_routes.get("/api/runs", response_model=RunsAnswer)
def runs(request: Request) -> dict:
    """The runs served, the one answered when ``?run=`` is not given first."""
    views = request.app.state.views
    return {"runs": [v.summary() for v in views.values()], "default": request.app.state.default,
            "reports": report_files(request.app.state.folder)}


@api_routes.get("/api/info", response_model=InfoAnswer)
def info(view: View) -> dict:
    """The run: model, latent size, dataset, classes, the map's method (and its axes when linear), the
    per-dimension statistics of the test codes, and the request limits."""
    return view.info(LIMITS)


@api_routes.get("/api/points", response_model=PointsAnswer)
def points(view: View) -> Response:
    """The 2-D map of the test codes, one point per test item."""
    return Response(view.points_json, media_type="application/json")


@api_routes.get("/api/items/{index}", response_model=ItemAnswer, response_model_exclude_unset=True)
def item(view: View, index: ItemIndex) -> dict:
    """Test item ``index``: its image, its reconstruction and its code."""
    return view.item(checked_index(view, index))


@api_routes.get("/api/images/{index}", responses={200: {"content": {"image/png": {}}}}, response_class=Response)
def image(view: View, index: ItemIndex) -> Response:
    """Test item ``index``'s image as a PNG."""
    return Response(view.input_png(checked_index(view, index)), media_type="image/png",
                    headers={"cache-control": "max-age=3600"})


@api_routes.post("/api/encode", response_model=CodeAnswer)
def encode(view: View, body: EncodeRequest) -> dict:
    """The code of test item ``index`` (a variational model's posterior mean)."""
    return {"z": view.encode(checked_index(view, body.index))}


@api_routes.post("/api/decode", response_model=DecodeAnswer, response_model_exclude_unset=True)
def decode(view: View, body: DecodeRequest) -> dict:
    """The image the decoder makes of the code ``z``; for a multimodal run also its word and nearest recordings."""
    latent = view.predictor.latent_dim
    if len(body.z) != latent:
        raise HTTPException(422, f"z has {len(body.z)} values but this run's codes have {latent}")
    return view.code_answer(body.z)


@api_routes.post("/api/interpolate", response_model=InterpolateAnswer)
def interpolate(view: View, body: InterpolateRequest) -> dict:
    """``steps`` codes on the line between the codes of test items ``a`` and ``b``, and their images."""
    codes, images = view.interpolate(checked_index(view, body.a), checked_index(view, body.b), body.steps)
    return {"z": codes, "images": images}


@api_routes.post("/api/sample", response_model=ImagesAnswer)
def sample(view: View, body: SampleRequest) -> dict:
    """``n`` images decoded from codes drawn from the prior (generative models; 400 for the others)."""
    if not view.predictor.can_sample:
        raise HTTPException(400, f"the {view.predictor.name} model has no prior to sample from")
    return {"images": view.sample(body.n, body.seed)}


@api_routes.get("/api/recordings", response_model=RecordingsAnswer)
def recordings(view: View) -> dict:
    """A multimodal run's test recordings and where their codes lie on the map (runs with audio; 400 else)."""
    return audio_of(view).recording_points()


@api_routes.get("/api/recordings/{index}", response_model=RecordingAnswer, response_model_exclude_unset=True)
def recording(view: View, index: ItemIndex) -> dict:
    """Test recording ``index``: its MFCC picture and what its code decodes to (runs with audio; 400 else)."""
    return view.recording(in_range(index, len(audio_of(view).recordings), "recording", "recordings"))


@api_routes.post("/api/text", response_model=TextAnswer, response_model_exclude_unset=True)
def text(view: View, body: TextRequest) -> dict:
    """Images generated from a text (multimodal runs with text; 400 for the others)."""
    if not view.has_text:
        raise HTTPException(400, f"the run {view.name} has no text modality; serve a multimodal run trained "
                                 f"with text (--modalities image,text)")
    return view.from_text(body.text, body.n, body.seed)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own answer echoes the input, which may hold NaN or infinities JSON cannot carry
        detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(AelabError)
    async def user_error(request: Request, exc: AelabError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("error answering %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; see the server's log"}, status_code=500)
