"""DICOMweb routes under ``/dicom-web`` (PS3.18): QIDO-RS, WADO-RS and STOW-RS.

The work is in :mod:`scp.services.dicomweb`; these routes map HTTP onto it:

* QIDO-RS (PS3.18 10.6): ``GET /studies``, ``/series``, ``/instances``,
  ``/studies/{study}/series``, ``/studies/{study}/instances``,
  ``/studies/{study}/series/{series}/instances``: ``application/dicom+json``;
* WADO-RS (PS3.18 10.4): ``GET /studies/{study}[/series/{series}[/instances/{sop}]]``
  (``multipart/related; type="application/dicom"``), the same with ``/metadata``
  (``application/dicom+json``), ``.../instances/{sop}/frames/{1,2...}`` and
  ``.../instances/{sop}/bulkdata/7FE00010``;
* STOW-RS (PS3.18 10.5): ``POST /studies`` and ``/studies/{study}``, the body streamed
  to disk part by part.

Errors are problem bodies (RFC 9457): 400 bad parameter or malformed body, 404 nothing
stored there, 406 ``Accept`` not servable, 413 a part over ``[node] max_instance_bytes``,
415 a body that is not ``multipart/related; type="application/dicom"``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response, StreamingResponse

from scp.api.openapi import problem_responses
from scp.api.problems import problem
from scp.services.dicomweb import DicomWeb
from scp.services.dicomweb.multipart import (
    MediaType,
    MultipartError,
    OutPart,
    PartTooLarge,
    PartWriter,
    multipart_stream,
    new_boundary,
    split_media_ranges,
)
from scp.services.dicomweb.qido import QidoError, parse_query
from scp.services.dicomweb.wado import NotAcceptable, StoredInstance
from scp.services.find import Level

log = logging.getLogger("spacing_scp.http")

PREFIX = "/dicom-web"
DICOM_JSON = "application/dicom+json"
Study = Annotated[str, Path(description="Study Instance UID (0020,000D)")]
Series = Annotated[str, Path(description="Series Instance UID (0020,000E)")]
Sop = Annotated[str, Path(description="SOP Instance UID (0008,0018)")]


def base_url(request: Request) -> str:
    """The DICOMweb root as the client addressed it (``http://host:port/dicom-web``)."""
    return str(request.base_url).rstrip("/") + PREFIX


def dicom_json(
    body: Any, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return JSONResponse(body, status_code=status_code, media_type=DICOM_JSON, headers=headers)


#: Media ranges a DICOM JSON answer satisfies (PS3.18 8.7.3.1: JSON is the node's only
#: metadata and search representation; application/dicom+xml is not offered).
JSON_RANGES = frozenset({DICOM_JSON, "application/json", "application/*", "*/*"})


def json_not_acceptable(request: Request) -> Response | None:
    """A 406 problem when the ``Accept`` header allows no DICOM JSON answer."""
    ranges = split_media_ranges(request.headers.get("accept", ""))
    if not ranges or any(r.essence in JSON_RANGES for r in ranges):
        return None
    return problem(406, "only application/dicom+json is served here (no application/dicom+xml)")


def _multipart(parts: Iterator[OutPart], part_type: str) -> StreamingResponse:
    boundary = new_boundary()
    media = MediaType.parse(part_type).essence
    return StreamingResponse(
        multipart_stream(parts, boundary),
        media_type=f'multipart/related; type="{media}"; boundary={boundary}',
    )


def dicomweb_router(web: DicomWeb) -> APIRouter:
    """The DICOMweb routes over ``web``."""
    router = APIRouter(prefix=PREFIX, tags=["DICOMweb"], responses=problem_responses(401, 500))
    json_ok: dict[int | str, dict[str, Any]] = {
        200: {"content": {DICOM_JSON: {"schema": {"type": "array", "items": {"type": "object"}}}}}
    }
    multipart_ok: dict[int | str, dict[str, Any]] = {
        200: {"content": {"multipart/related": {"schema": {"type": "string", "format": "binary"}}}}
    }

    # -- QIDO-RS ---------------------------------------------------------------------------
    def search(
        request: Request, level: Level, study: str | None = None, series: str | None = None
    ) -> Response:
        refused = json_not_acceptable(request)
        if refused is not None:
            return refused
        try:
            query = parse_query(
                level,
                list(request.query_params.multi_items()),
                study=study,
                series=series,
                max_results=web.max_results,
            )
            items = web.qido.search(query, base_url(request))
        except QidoError as exc:
            return problem(400, str(exc))
        headers = {}
        if query.warnings:  # RFC 7234 5.5 warn-code 299, one warn-text each
            headers["Warning"] = ", ".join(f'299 spacing-scp "{w}"' for w in query.warnings)
        if not items:
            return Response(status_code=204, headers=headers)
        return dicom_json(items, headers=headers)

    qido: dict[str, Any] = {
        "responses": {**json_ok, **problem_responses(400, 406)},
        "response_class": Response,
    }

    @router.get("/studies", summary="QIDO-RS: search studies", **qido)
    def search_studies(request: Request) -> Response:
        return search(request, "STUDY")

    @router.get("/series", summary="QIDO-RS: search series", **qido)
    def search_series(request: Request) -> Response:
        return search(request, "SERIES")

    @router.get("/instances", summary="QIDO-RS: search instances", **qido)
    def search_instances(request: Request) -> Response:
        return search(request, "IMAGE")

    @router.get("/studies/{study}/series", summary="QIDO-RS: series of a study", **qido)
    def search_study_series(request: Request, study: Study) -> Response:
        return search(request, "SERIES", study)

    @router.get("/studies/{study}/instances", summary="QIDO-RS: instances of a study", **qido)
    def search_study_instances(request: Request, study: Study) -> Response:
        return search(request, "IMAGE", study)

    @router.get(
        "/studies/{study}/series/{series}/instances",
        summary="QIDO-RS: instances of a series",
        **qido,
    )
    def search_series_instances(request: Request, study: Study, series: Series) -> Response:
        return search(request, "IMAGE", study, series)

    # -- WADO-RS ---------------------------------------------------------------------------
    def retrieve(request: Request, found: list[StoredInstance]) -> Response:
        try:
            part_type = web.wado.negotiate_instances(request.headers.get("accept", ""), found)
        except NotAcceptable as exc:
            return problem(406, str(exc))
        return _multipart(web.wado.instance_parts(found, base_url(request)), part_type)

    def metadata(request: Request, found: list[StoredInstance]) -> Response:
        refused = json_not_acceptable(request)
        if refused is not None:
            return refused
        return dicom_json(list(web.wado.metadata(found, base_url(request))))

    wado: dict[str, Any] = {
        "responses": {**multipart_ok, **problem_responses(404, 406)},
        "response_class": Response,
    }
    meta: dict[str, Any] = {
        "responses": {**json_ok, **problem_responses(404, 406)},
        "response_class": Response,
    }

    @router.get("/studies/{study}", summary="WADO-RS: a study's instances", **wado)
    def retrieve_study(request: Request, study: Study) -> Response:
        return retrieve(request, web.wado.instances(study))

    @router.get("/studies/{study}/series/{series}", summary="WADO-RS: a series", **wado)
    def retrieve_series(request: Request, study: Study, series: Series) -> Response:
        return retrieve(request, web.wado.instances(study, series))

    @router.get(
        "/studies/{study}/series/{series}/instances/{sop}",
        summary="WADO-RS: an instance",
        **wado,
    )
    def retrieve_instance(request: Request, study: Study, series: Series, sop: Sop) -> Response:
        return retrieve(request, web.wado.instances(study, series, sop))

    @router.get("/studies/{study}/metadata", summary="WADO-RS: a study's metadata", **meta)
    def study_metadata(request: Request, study: Study) -> Response:
        return metadata(request, web.wado.instances(study))

    @router.get(
        "/studies/{study}/series/{series}/metadata",
        summary="WADO-RS: a series' metadata",
        **meta,
    )
    def series_metadata(request: Request, study: Study, series: Series) -> Response:
        return metadata(request, web.wado.instances(study, series))

    @router.get(
        "/studies/{study}/series/{series}/instances/{sop}/metadata",
        summary="WADO-RS: an instance's metadata",
        **meta,
    )
    def instance_metadata(request: Request, study: Study, series: Series, sop: Sop) -> Response:
        return metadata(request, web.wado.instances(study, series, sop))

    def frames(request: Request, inst: StoredInstance, numbers: list[int] | None) -> Response:
        try:
            part_type, parts = web.wado.frame_parts(
                inst, numbers, request.headers.get("accept", "")
            )
        except NotAcceptable as exc:
            return problem(406, str(exc))
        return _multipart(parts, part_type)

    @router.get(
        "/studies/{study}/series/{series}/instances/{sop}/frames/{frame_list}",
        summary="WADO-RS: frames of an instance",
        responses={**multipart_ok, **problem_responses(400, 404, 406)},
        response_class=Response,
    )
    def retrieve_frames(
        request: Request,
        study: Study,
        series: Series,
        sop: Sop,
        frame_list: Annotated[str, Path(description="frame numbers, from 1, comma-separated")],
    ) -> Response:
        parts = frame_list.split(",")
        if not all(re.fullmatch(r"[0-9]+", n) and int(n) >= 1 for n in parts):
            return problem(400, f"frame list {frame_list!r}: comma-separated numbers from 1")
        numbers = [int(n) for n in parts]
        return frames(request, web.wado.instances(study, series, sop)[0], numbers)

    @router.get(
        "/studies/{study}/series/{series}/instances/{sop}/bulkdata/7FE00010",
        summary="WADO-RS: the Pixel Data bulk data (every frame)",
        responses={**multipart_ok, **problem_responses(400, 404, 406)},
        response_class=Response,
    )
    def retrieve_pixel_data(request: Request, study: Study, series: Series, sop: Sop) -> Response:
        return frames(request, web.wado.instances(study, series, sop)[0], None)

    # -- STOW-RS ---------------------------------------------------------------------------
    stow: dict[str, Any] = {
        "responses": {
            200: {"content": {DICOM_JSON: {"schema": {"type": "object"}}}},
            202: {"description": "some instances stored, others failed or have warnings"},
            409: {"description": "no instance stored (Failed SOP Sequence)"},
            **problem_responses(400, 413, 415),
        },
        "response_class": Response,
    }

    @router.post("/studies", summary="STOW-RS: store instances", **stow)
    async def store(request: Request) -> Response:
        return await _store(request, None)

    @router.post("/studies/{study}", summary="STOW-RS: store instances of a study", **stow)
    async def store_study(request: Request, study: Study) -> Response:
        return await _store(request, study)

    async def _store(request: Request, study: str | None) -> Response:
        media = MediaType.parse(request.headers.get("content-type", ""))
        if media.essence != "multipart/related" or media.params.get(
            "type", "application/dicom"
        ).lower() not in ("application/dicom",):
            return problem(415, 'STOW-RS takes multipart/related; type="application/dicom" bodies')
        boundary = media.params.get("boundary", "")
        try:
            writer = PartWriter(boundary, web.tmp_dir, web.max_part_bytes)
        except MultipartError as exc:
            return problem(400, str(exc))
        try:
            try:
                async for chunk in request.stream():
                    writer.feed(chunk)
                parts = writer.finish()
            except ClientDisconnect:
                log.warning("STOW-RS: the client went away before the body ended")
                return problem(400, "the body ended before its closing boundary delimiter")
            except PartTooLarge as exc:
                return problem(413, str(exc))
            except MultipartError as exc:
                return problem(400, f"malformed multipart body: {exc}")
            if not parts:
                return problem(400, "the body has no part")
            client = request.client
            result = await run_in_threadpool(
                web.stow.store,
                parts,
                base_url=base_url(request),
                study_instance_uid=study,
                peer_address=f"{client.host}:{client.port}" if client else None,
            )
            return dicom_json(result.body, status_code=result.http_status)
        finally:
            writer.discard()

    return router
