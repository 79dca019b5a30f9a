"""The web page for the people who run the node (issue 19), served at ``/ui``.

Server-rendered Jinja2 templates and a little plain JavaScript (polling fragments every
2 s, no held-open connection), every asset in this package (no CDN, no build step).
Reading needs no token; actions need the token and a CSRF token (:mod:`.auth`).

* :mod:`.pages`: the views (overview, series list, series, instance, forwarding, devices);
* :mod:`.actions`: sign in/out, retry dead jobs, pause/resume a destination;
* :mod:`.charts`: the inline SVG charts; :mod:`.context`: templates and shared settings.
"""

from __future__ import annotations

from fastapi import APIRouter

from scp.api.ui.actions import action_router
from scp.api.ui.auth import UiAuth
from scp.api.ui.context import UiContext
from scp.api.ui.pages import page_router


def ui_router(ui: UiContext) -> APIRouter:
    """Every ``/ui`` route over ``ui``."""
    router = APIRouter(include_in_schema=False)
    router.include_router(page_router(ui))
    router.include_router(action_router(ui))
    return router


__all__ = ["UiAuth", "UiContext", "ui_router"]
