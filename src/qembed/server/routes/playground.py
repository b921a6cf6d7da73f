"""The browser pages, all served from this process (nothing from a CDN: they work offline).

- ``/``: the playground (``static/playground.html`` + ``.js`` + ``.css``, vanilla JS): texts in,
  a cosine-similarity heatmap and token counts out, through the server's own /v1/embeddings,
  /tokenize and /info; with ``--index``, a search box over /v1/search.
- ``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) from the JS/CSS that the ``fastapi-offline``
  package ships (MIT; Swagger UI and ReDoc themselves are Apache-2.0 and MIT), served under
  ``/static/docs/``. The app is built with ``docs_url=None, redoc_url=None`` so that FastAPI's
  CDN pages are not registered.

The pages and assets are open (no API key), like /info: they hold no data; the playground
sends the key typed into it as ``Authorization: Bearer`` on the calls that compute.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from starlette.responses import FileResponse, HTMLResponse, Response

STATIC = Path(__file__).resolve().parent.parent / "static"
# The playground's page allows nothing from elsewhere: scripts, styles and calls are same-origin.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
)
_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".html": "text/html; charset=utf-8",
}
PLAYGROUND_ASSETS = {"playground.js", "playground.css"}
DOCS_ASSETS = {"swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png"}
CACHE = "public, max-age=3600"


def docs_assets_dir() -> Path:
    """Where the Swagger UI and ReDoc bundles are (the ``fastapi-offline`` package's static folder)."""
    import fastapi_offline  # a dependency only for these files

    return Path(fastapi_offline.__file__).resolve().parent / "static"


router = APIRouter(include_in_schema=False)


def _asset(folder: Path, name: str, allowed: set[str]) -> Response:
    if name not in allowed:  # a fixed list: no path from the URL ever reaches the file system
        return Response(status_code=404)
    path = folder / name
    return FileResponse(
        path,
        media_type=_TYPES[path.suffix],
        headers={"Cache-Control": CACHE, "X-Content-Type-Options": "nosniff"},
    )


@router.get("/", response_class=HTMLResponse)
async def playground() -> Response:
    html = (STATIC / "playground.html").read_bytes()
    return Response(
        html,
        media_type=_TYPES[".html"],
        headers={"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"},
    )


@router.get("/static/{name}")
async def playground_asset(name: str) -> Response:
    return _asset(STATIC, name, PLAYGROUND_ASSETS)


@router.get("/static/docs/{name}")
async def docs_asset(name: str) -> Response:
    return _asset(docs_assets_dir(), name, DOCS_ASSETS)


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


@router.get("/docs", response_class=HTMLResponse)
async def swagger_ui(request: Request) -> HTMLResponse:
    root = _root(request)
    return get_swagger_ui_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url=f"{root}/static/docs/swagger-ui-bundle.js",
        swagger_css_url=f"{root}/static/docs/swagger-ui.css",
        swagger_favicon_url=f"{root}/static/docs/favicon.png",
        # validatorUrl null: Swagger UI would otherwise ask validator.swagger.io about the schema
        swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": True},
    )


@router.get("/redoc", response_class=HTMLResponse)
async def redoc(request: Request) -> HTMLResponse:
    root = _root(request)
    return get_redoc_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=f"{root}/static/docs/redoc.standalone.js",
        redoc_favicon_url=f"{root}/static/docs/favicon.png",
        with_google_fonts=False,
    )
