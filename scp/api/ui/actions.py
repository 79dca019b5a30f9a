"""The web page's actions (``POST /ui/...``), each behind :class:`scp.api.ui.auth.UiAuth`:
sign in and out, retry a dead job, retry every dead job of a destination, pause and
resume a destination. An action answers ``303 See Other`` back to the forwarding page
(``?done=`` says what happened); a refused one answers 401/403 with the reason.
"""

from __future__ import annotations

from urllib.parse import parse_qs, quote, urlencode

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from scp.api.ui.auth import COOKIE, Refused
from scp.api.ui.context import UiContext
from storage import destinations, outbox
from storage.db import write_session

#: Largest form body read, bytes.
MAX_FORM_BYTES = 4096


async def _form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise Refused(413, "form too large")
    parsed = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {k: v[-1] for k, v in parsed.items()}


def _back(done: str, destination: str | None = None) -> RedirectResponse:
    query = {"done": done, **({"destination": destination} if destination else {})}
    return RedirectResponse(f"/ui/forwarding?{urlencode(query)}", status_code=303)


def _safe_next(value: str) -> str:
    """A same-site path to return to after signing in (anything else: the overview)."""
    return value if value.startswith("/ui") and "//" not in value else "/ui"


def action_router(ui: UiContext) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    def refused(request: Request, exc: Refused) -> Response:
        return ui.page(
            request, "error.html", status_code=exc.status, detail=exc.detail, status=exc.status
        )

    @router.get("/ui/login")
    def login_form(request: Request) -> Response:
        nxt = _safe_next(request.query_params.get("next", "/ui"))
        return ui.page(request, "login.html", next=nxt, wrong=False)

    @router.post("/ui/login")
    async def login(request: Request) -> Response:
        try:
            form = await _form(request)
        except Refused as exc:
            return refused(request, exc)
        nxt = _safe_next(form.get("next", "/ui"))
        if not ui.auth.enabled:
            return refused(
                request, Refused(403, "the node has no [http] token: nothing to sign in to")
            )
        if not ui.auth.token_ok(form.get("token", "")):
            return ui.page(request, "login.html", status_code=401, next=nxt, wrong=True)
        response = RedirectResponse(nxt, status_code=303)
        response.set_cookie(
            COOKIE,
            ui.auth.session_value(),
            httponly=True,
            samesite="strict",
            path="/ui",
            secure=request.url.scheme == "https",
        )
        return response

    @router.post("/ui/logout")
    async def logout(request: Request) -> Response:
        try:
            ui.auth.check_action(request, (await _form(request)).get("csrf", ""))
        except Refused as exc:
            return refused(request, exc)
        response = RedirectResponse("/ui", status_code=303)
        response.delete_cookie(COOKIE, path="/ui")
        return response

    def _wake(name: str | None) -> None:
        if ui.wake is not None:
            ui.wake([name] if name else None)

    @router.post("/ui/actions/{action}")
    async def act(request: Request, action: str) -> Response:
        try:
            form = await _form(request)
            ui.auth.check_action(request, form.get("csrf", ""))
        except Refused as exc:
            return refused(request, exc)
        name = form.get("destination", "").strip() or None
        with write_session(ui.sessions) as session:
            if action == "retry-job":
                try:
                    job_id = int(form.get("job_id", ""))
                except ValueError:
                    return refused(request, Refused(400, "job_id must be a job's number"))
                name = destinations.job_destination(session, job_id)
                if not destinations.retry_job(session, job_id):
                    return refused(request, Refused(409, f"job {job_id} is not dead"))
                done = f"job {job_id} queued again"
            elif action == "retry-dead" and name:
                count = outbox.retry(session, destination=name, dead=True)
                done = f"{count} dead job(s) of {name} queued again"
            elif action in ("pause", "resume") and name:
                destinations.set_paused(session, name, action == "pause")
                done = f"{name} {'paused' if action == 'pause' else 'resumed'}"
            else:
                return refused(
                    request, Refused(400, f"unknown action {quote(action)!r} or no destination")
                )
        _wake(name)
        return _back(done, name)

    return router
