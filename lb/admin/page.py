"""The status page's static files: read once from the package, served without the admin key (the
page holds no data; everything it shows comes from the key-guarded JSON routes)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files

# path -> (file in static/, content type)
ASSETS = {
    "/admin/": ("index.html", "text/html; charset=utf-8"),
    "/admin/admin.js": ("admin.js", "text/javascript; charset=utf-8"),
    "/admin/admin.css": ("admin.css", "text/css; charset=utf-8"),
}
PAGE_PATHS = frozenset({"/admin", *ASSETS})  # open: /admin answers with a redirect to /admin/
# the page loads only its own files and talks only to this origin; nothing inline, no framing
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # a new release's page is picked up at once
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str


def load_assets() -> dict[str, Asset]:
    """Every static file by its path, read from the installed package (wheel or checkout)."""
    static = files("lb.admin") / "static"
    return {path: Asset((static / name).read_bytes(), content_type)
            for path, (name, content_type) in ASSETS.items()}
