"""The web page's read-only views (``GET /ui...``): overview, series list, series,
instance, forwarding, devices, and the fragments the pages poll (no held-open connection).
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response

from scp.api.ui import charts
from scp.api.ui.context import STATIC, UiContext
from scp.services import dashboard, devices, files
from scp.services.dashboard import SeriesFilter
from scp.services.render import NotRenderable
from scp.services.retention import deletions_page
from storage import outbox, outbox_jobs
from storage.queries import NotFound, select_series

#: Rows of a series list page.
PAGE_SIZE = 50
VERDICTS = ("ok", "info", "warning", "corrected", "invalid")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_STATIC_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}


def _text(request: Request, name: str) -> str | None:
    value = request.query_params.get(name, "").strip()
    return value or None


def _date(request: Request, name: str) -> str | None:
    """A date filter (``YYYY-MM-DD``, from ``<input type=date>``) as a DA; ValueError."""
    value = _text(request, name)
    if value is None:
        return None
    if not _DATE.fullmatch(value):
        raise ValueError(f"{name}: expected a date as YYYY-MM-DD, got {value!r}")
    return value.replace("-", "")


def series_filter(request: Request) -> SeriesFilter:
    """The series list's filters from the query string; ``ValueError`` for a bad one."""
    verdict = _text(request, "verdict")
    if verdict is not None and verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}")
    return SeriesFilter(
        study_date_from=_date(request, "date_from"),
        study_date_to=_date(request, "date_to"),
        modality=_text(request, "modality"),
        calling_ae_title=_text(request, "calling_ae"),
        verdict=verdict,
        code=_text(request, "code"),
    )


def merged_findings(
    series_findings: list[dict[str, Any]], instances: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Every finding of a series with its rule and tag: the instances' findings grouped by
    (code, severity, rule, tag), then the series' own (geometry) findings."""
    grouped: dict[tuple[Any, ...], dict[str, Any]] = {}
    for inst in instances:
        for f in inst["findings"]:
            key = (f["code"], f["severity"], f["rule"], f["tag"])
            entry = grouped.setdefault(key, {**f, "count": 0})
            entry["count"] += 1
    codes = {key[0] for key in grouped}
    geometry = [{**f, "rule": None, "tag": None} for f in series_findings if f["code"] not in codes]
    return [*geometry, *grouped.values()]


def page_router(ui: UiContext) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    def bad_request(request: Request, detail: str, status: int = 400) -> HTMLResponse:
        return ui.page(request, "error.html", status_code=status, detail=detail, status=status)

    def overview_values() -> dict[str, Any]:
        with ui.sessions() as session:
            data = dashboard.overview(
                session,
                data_dir=ui.store.root,
                destination_names=ui.destinations,
                associations=ui.associations,
            )
        data["chart"] = charts.arrivals(data["per_minute"])
        gauges = ui.index_gauges() if ui.index_gauges is not None else None
        data["index_lag_s"] = gauges["spacing_scp_index_lag_last_seconds"] if gauges else None
        data["index_pending_bytes"] = (
            int(gauges["spacing_scp_index_pending_bytes"]) if gauges else None
        )
        data["store"] = ui.retention.status() if ui.retention is not None else None
        return {"o": data}

    @router.get("/ui")
    def overview(request: Request) -> Response:
        return ui.page(request, "overview.html", **overview_values())

    @router.get("/ui/fragments/overview")
    def overview_fragment(request: Request) -> Response:
        return ui.page(request, "_overview.html", **overview_values())

    def series_values(request: Request) -> dict[str, Any]:
        filters = series_filter(request)
        cursor = _text(request, "cursor")
        with ui.sessions() as session:
            items, nxt = dashboard.series_rows(
                session, ui.queries, filters, limit=PAGE_SIZE, cursor=cursor
            )
        query = {k: v for k, v in request.query_params.items() if k != "cursor" and v}
        return {"items": items, "next": nxt, "cursor": cursor, "q": query, "verdicts": VERDICTS}

    def series_view(request: Request, template: str) -> Response:
        try:
            values = series_values(request)
        except ValueError as exc:
            return bad_request(request, str(exc))
        return ui.page(request, template, **values)

    @router.get("/ui/series")
    def series_list(request: Request) -> Response:
        return series_view(request, "series_list.html")

    @router.get("/ui/fragments/series-rows")
    def series_rows(request: Request) -> Response:
        """The list's rows alone: what the page polls."""
        return series_view(request, "_series_rows.html")

    @router.get("/ui/series/{uid}")
    def series_page(request: Request, uid: str) -> Response:
        with ui.sessions() as session:
            try:
                series = ui.queries.get_series(session, uid)
                row, _ = select_series(session, uid)
            except NotFound as exc:
                return bad_request(request, str(exc), 404)
            main = next((s for s in series["stacks"] if s["main"]), None)
            plot = dashboard.slice_plot(session, row.id, main["key"] if main else None)
            instances, _ = ui.queries.list_instances(session, uid, limit=1000)
            try:
                middle = files.middle_instance(session, ui.store, uid)
            except NotFound:
                middle = None
        edits = []
        corrected = next((i for i in instances if i["actions"]), None)
        if corrected is not None:
            with ui.sessions() as session:
                stored = files.instance_files(session, ui.store, corrected["sop_instance_uid"])
            edits = files.original_attributes(stored.stored)
        received = files.received_spacing(middle.received_pixel_spacing) if middle else None
        sources = files.spacing_attributes(middle.stored) if middle else {}
        swapped = bool(
            middle
            and received
            and received != (None, None)
            and received != (middle.row_mm, middle.column_mm)
        )
        return ui.page(
            request,
            "series.html",
            s=series,
            plot=plot,
            svg=charts.slice_plot(plot) if plot and plot.points else None,
            instances=instances,
            findings=merged_findings(series["findings"], instances),
            sources=sources,
            edits=edits,
            edited=corrected,
            middle=middle,
            received=received,
            spacing_changed=swapped,
        )

    @router.get("/ui/series/{uid}/image.png")
    def series_image(request: Request, uid: str) -> Response:
        spacing = request.query_params.get("spacing", "effective")
        if spacing not in ("effective", "received"):
            return bad_request(request, "spacing must be effective or received")
        with ui.sessions() as session:
            try:
                png = files.series_image(session, ui.store, uid, spacing)
            except NotFound as exc:
                return bad_request(request, str(exc), 404)
            except (NotRenderable, OSError) as exc:
                return bad_request(request, f"cannot render the image: {exc}", 422)
        return Response(png, media_type="image/png")

    @router.get("/ui/instances/{uid}")
    def instance_page(request: Request, uid: str) -> Response:
        with ui.sessions() as session:
            try:
                inst = ui.queries.get_instance(session, uid)
                paths = files.instance_files(session, ui.store, uid)
            except NotFound as exc:
                return bad_request(request, str(exc), 404)
        stored = files.spacing_attributes(paths.stored)
        original = files.spacing_attributes(paths.original) if paths.original else stored
        return ui.page(
            request,
            "instance.html",
            i=inst,
            stored=stored,
            original=original,
            keys=[k for k in stored.keys() | original.keys() if stored.get(k) or original.get(k)],
            has_original=paths.original is not None,
        )

    @router.get("/ui/instances/{uid}/{which}.dcm")
    def instance_file(request: Request, uid: str, which: str) -> Response:
        if ui.auth.enabled and not ui.auth.signed_in(request):
            return bad_request(request, "sign in with the node's token to download files", 401)
        with ui.sessions() as session:
            try:
                paths = files.instance_files(session, ui.store, uid)
            except NotFound as exc:
                return bad_request(request, str(exc), 404)
        path = {"stored": paths.stored, "original": paths.original}.get(which)
        if path is None or not path.is_file():
            return bad_request(request, f"no {which} file for instance {uid}", 404)
        return FileResponse(path, media_type="application/dicom", filename=f"{uid}-{which}.dcm")

    @router.get("/ui/forwarding")
    def forwarding(request: Request) -> Response:
        state = _text(request, "state")
        destination = _text(request, "destination")
        with ui.sessions() as session:
            queues = dashboard.queues(session, ui.destinations)
            try:
                jobs, nxt = outbox_jobs.list_jobs(
                    session,
                    state=state,
                    destination=destination,
                    limit=PAGE_SIZE,
                    cursor=_text(request, "cursor"),
                )
            except ValueError as exc:
                return bad_request(request, str(exc))
        query = {k: v for k, v in request.query_params.items() if k in ("state", "destination")}
        return ui.page(
            request,
            "forwarding.html",
            queues=queues,
            jobs=jobs,
            next=nxt,
            state=state,
            destination=destination,
            q=query,
            states=outbox.STATES,
            done=_text(request, "done"),
        )

    @router.get("/ui/devices")
    def devices_page(request: Request) -> Response:
        with ui.sessions() as session:
            items = devices.list_devices(session, ui.swap_rules)
        return ui.page(request, "devices.html", items=items)

    @router.get("/ui/deletions")
    def deletions(request: Request) -> Response:
        with ui.sessions() as session:
            try:
                items, nxt = deletions_page(session, PAGE_SIZE, _text(request, "cursor"))
            except ValueError as exc:
                return bad_request(request, str(exc))
        status = ui.retention.status() if ui.retention is not None else None
        return ui.page(request, "deletions.html", items=items, next=nxt, store=status)

    @router.get("/ui/static/{name}")
    def static(name: str) -> Response:
        path = STATIC / name
        media = _STATIC_TYPES.get(path.suffix)
        if "/" in name or media is None or not path.is_file():
            return Response("not found", status_code=404, media_type="text/plain")
        return FileResponse(path, media_type=media)

    return router
