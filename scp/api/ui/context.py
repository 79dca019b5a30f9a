"""What the web page's routes share: the index, the file store, the node's settings, the
templates (Jinja2, autoescaped) and :class:`scp.api.ui.auth.UiAuth`."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import Request
from starlette.responses import HTMLResponse

from scp import __version__
from scp.api.ui.auth import UiAuth
from scp.pipeline.policy import SwapRule
from scp.services.retention import Retention
from scp.services.series_query import IndexQueries
from storage.filestore import FileStore

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"


def _when(value: Any) -> str:
    """An ISO text or datetime as ``YYYY-MM-DD HH:MM:SS`` UTC; ``-`` for none."""
    if value is None:
        return "-"
    if isinstance(value, datetime):
        value = value.isoformat()
    return str(value).replace("T", " ")[:19]


def _mm(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


def _da(value: str | None) -> str:
    """A DA (YYYYMMDD) as YYYY-MM-DD."""
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if value and len(value) == 8 else value or "-"


def _size(value: float | None) -> str:
    if value is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    return "-"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    return f"{s // 3600} h {s % 3600 // 60} min"


def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=_when, mm=_mm, da=_da, size=_size, age=_age)
    return env


@dataclass
class UiContext:
    """Everything a page needs; built once per application by :func:`scp.api.ui.ui_router`."""

    sessions: sessionmaker[Session]
    queries: IndexQueries
    store: FileStore
    ae_title: str
    auth: UiAuth
    destinations: Sequence[str] = ()
    swap_rules: Sequence[SwapRule] = ()
    associations: Callable[[], int] | None = None
    wake: Callable[[Iterable[str] | None], None] | None = None
    #: The indexer's gauges (``spacing_scp_index_lag_last_seconds``,
    #: ``spacing_scp_index_pending_bytes``); ``None`` when the node indexes inline.
    index_gauges: Callable[[], dict[str, float]] | None = None
    #: Retention (issue 20): the store's figures on the overview, the deletions page.
    retention: Retention | None = None
    env: Environment = field(default_factory=environment)

    def page(
        self, request: Request, template: str, status_code: int = 200, **values: Any
    ) -> HTMLResponse:
        """``template`` rendered with ``values`` and the page frame's own."""
        html = self.env.get_template(template).render(
            request=request,
            ae_title=self.ae_title,
            version=__version__,
            signed_in=self.auth.signed_in(request),
            actions_enabled=self.auth.enabled,
            csrf=self.auth.csrf(request),
            path=request.url.path,
            **values,
        )
        return HTMLResponse(html, status_code=status_code)
