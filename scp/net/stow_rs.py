"""The forwarding workers' STOW-RS sender (PS3.18 10.5) on httpx.

:class:`StowRsSender` implements :class:`scp.services.forwarding.sender.AssociationOpener`
for ``type = "stow-rs"`` destinations, so the same outbox, retries, dead letter and
visibility serve DICOMweb archives: an "association" is one kept-alive HTTP connection
(opened after a TCP connect check, so an archive that is down backs the worker off as a
whole, as an unreachable Storage SCP does), and each instance is one
``POST {url}/studies`` with a ``multipart/related; type="application/dicom"`` body
streamed from the stored file (never held in memory, ``Content-Length`` known).

The response maps to the status a C-STORE would have had (PS3.18 10.5.3):

* 200, or the instance in Referenced SOP Sequence (0008,1199): Success, or its Warning
  Reason (0008,1196) (0xB000...): the job is done;
* the instance in Failed SOP Sequence (0008,1198): its Failure Reason (0008,1197);
* 409 or 202 without the instance listed: 0xC000 (Cannot understand, retried until
  ``max_attempts``); any other 4xx/5xx: 0xA700/0x0110 with the HTTP status in the error
  (401/403: the token or password is wrong: retried, the job's error says so);
* no response (connection refused or cut, timeout): no status, as an A-ABORT.

Every archive accepts any transfer syntax over STOW-RS, so every proposed presentation
context is "accepted" with the instance's own transfer syntax: instances go out as stored.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydicom import dcmread

from scp import status
from scp.services.dicomweb.multipart import OutPart, file_chunks, multipart_stream, new_boundary
from scp.services.forwarding.sender import (
    AcceptedContext,
    ContextProposal,
    RejectedContext,
    StoreResponse,
    StowSettings,
)

log = logging.getLogger("spacing_scp.forward")

#: Failure Reason / Warning Reason / Referenced and Failed SOP Sequences (PS3.18 F.2 keys).
_REFERENCED, _FAILED = "00081199", "00081198"
_SOP_INSTANCE, _WARNING, _FAILURE = "00081155", "00081196", "00081197"


class StowRsConnection:
    """One kept-alive connection to a STOW-RS archive (a ``StoreAssociation``)."""

    def __init__(
        self,
        client: httpx.Client | None,
        settings: StowSettings,
        contexts: Sequence[ContextProposal],
        failure: str = "",
    ) -> None:
        self._client = client
        self._settings = settings
        self._failure = failure
        self.accepted_contexts: Sequence[AcceptedContext] = (
            [AcceptedContext(cx.abstract_syntax, cx.transfer_syntax[0]) for cx in contexts]
            if client is not None
            else []
        )
        self.rejected_contexts: Sequence[RejectedContext] = []

    @property
    def is_established(self) -> bool:
        return self._client is not None

    @property
    def failure(self) -> str:
        return self._failure

    def send_c_store(self, path: Path, *, reencode: bool) -> StoreResponse:
        """POST the instance in ``path`` (as stored: ``reencode`` changes nothing here)."""
        client = self._client
        if client is None:
            return StoreResponse(None, self._failure or "connection closed")
        sop_uid = _sop_instance_uid(path)
        boundary = new_boundary()
        parts = [OutPart("application/dicom", file_chunks(path))]
        length = sum(len(b) for b in multipart_stream([OutPart("application/dicom", [])], boundary))
        length += path.stat().st_size
        try:
            rsp = client.post(
                f"{self._settings.url}/studies",
                content=multipart_stream(parts, boundary),
                headers={
                    "Content-Type": (
                        f'multipart/related; type="application/dicom"; boundary={boundary}'
                    ),
                    "Content-Length": str(length),
                    "Accept": "application/dicom+json",
                },
            )
        except Exception as exc:  # httpx errors, or the client closed by abort()
            self.release()
            self._failure = f"no STOW-RS response from {self._settings.url}: {exc}"
            log.warning("forward: %s", self._failure)
            return StoreResponse(None, self._failure)
        return response_status(rsp.status_code, rsp.content, sop_uid)

    def release(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _sop_instance_uid(path: Path) -> str:
    try:
        ds = dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
        return str(ds.get("SOPInstanceUID", "")).strip("\x00 ")
    except Exception:
        return ""


def response_status(http_status: int, body: bytes, sop_instance_uid: str) -> StoreResponse:
    """The C-STORE status equivalent of a STOW-RS response for one instance."""
    try:
        doc: Any = json.loads(body) if body else {}
    except ValueError:
        doc = {}
    if isinstance(doc, list):  # some archives answer an array of one data set
        doc = doc[0] if doc and isinstance(doc[0], dict) else {}
    if not isinstance(doc, dict):
        doc = {}
    for item in _items(doc, _FAILED):
        if _uid(item) in (sop_instance_uid, ""):
            reason = _us(item, _FAILURE) or status.ERROR_CANNOT_UNDERSTAND
            return StoreResponse(
                reason, f"STOW-RS HTTP {http_status}: Failure Reason 0x{reason:04X}"
            )
    for item in _items(doc, _REFERENCED):
        if _uid(item) in (sop_instance_uid, ""):
            warning = _us(item, _WARNING)
            return StoreResponse(warning or status.SUCCESS, "")
    if http_status == 200:
        return StoreResponse(status.SUCCESS, "")
    if http_status in (202, 409):
        return StoreResponse(
            status.ERROR_CANNOT_UNDERSTAND, f"STOW-RS HTTP {http_status}: the instance not stored"
        )
    code = (
        status.REFUSED_OUT_OF_RESOURCES if http_status in (413, 507) else status.PROCESSING_FAILURE
    )
    detail = body[:200].decode("utf-8", "replace").strip()
    return StoreResponse(code, f"STOW-RS HTTP {http_status}" + (f": {detail}" if detail else ""))


def _items(doc: dict[str, Any], tag: str) -> list[dict[str, Any]]:
    value = doc.get(tag, {}).get("Value", []) if isinstance(doc.get(tag), dict) else []
    return [v for v in value if isinstance(v, dict)]


def _uid(item: dict[str, Any]) -> str:
    values = item.get(_SOP_INSTANCE, {}).get("Value", [])
    return str(values[0]) if values else ""


def _us(item: dict[str, Any], tag: str) -> int | None:
    values = item.get(tag, {}).get("Value", [])
    try:
        return int(values[0]) if values else None
    except (TypeError, ValueError):
        return None


class StowRsSender:
    """One STOW-RS destination (an ``AssociationOpener``); the class is the
    ``StowOpenerFactory``."""

    def __init__(self, settings: StowSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._current: StowRsConnection | None = None

    def _client(self) -> httpx.Client:
        s = self.settings
        verify: Any = s.verify_tls
        if s.verify_tls and s.ca_file:
            verify = ssl.create_default_context(cafile=s.ca_file)
        auth: Any = None
        headers = {"User-Agent": s.user_agent}
        if s.token:
            headers["Authorization"] = f"Bearer {s.token}"
        elif s.username:
            auth = httpx.BasicAuth(s.username, s.password)
        return httpx.Client(
            verify=verify,
            auth=auth,
            headers=headers,
            timeout=httpx.Timeout(s.response_timeout_s, connect=s.connect_timeout_s),
            follow_redirects=False,
        )

    def open(self, contexts: Sequence[ContextProposal]) -> StowRsConnection:
        parts = urlsplit(self.settings.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            with socket.create_connection(
                (parts.hostname or "", port), timeout=self.settings.connect_timeout_s
            ):
                pass
        except OSError as exc:
            failure = f"no connection to {self.settings.url}: {exc}"
            return StowRsConnection(None, self.settings, contexts, failure)
        conn = StowRsConnection(self._client(), self.settings, contexts)
        with self._lock:
            self._current = conn
        return conn

    def abort(self) -> bool:
        with self._lock:
            conn, self._current = self._current, None
        if conn is None or not conn.is_established:
            return False
        with contextlib.suppress(Exception):
            conn.release()
        return True
