"""The web page's HTTP rules without a browser (issue 19): open to read, actions need the
token and CSRF, the JSON API keeps its own rules, bad filters get a clear 400."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_config, send_files
from tests.dicom_factory import new_uid, write_ct

TOKEN = "http-test-token"


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as rsp:
            return rsp.status, rsp.read().decode(), dict(rsp.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(), dict(err.headers)


def _post(url: str, body: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    req = urllib.request.Request(
        url,
        data=body.encode(),
        method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as rsp:
            return rsp.status, rsp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.fixture
def ui_node(node_factory: Callable[..., Any], tmp_path: Path) -> Any:
    node = node_factory(http={"token": TOKEN})
    study, series = new_uid(), new_uid()
    files = [
        write_ct(
            tmp_path / f"{i}.dcm",
            study=study,
            series=series,
            instance_number=i + 1,
            position=(0.0, 0.0, float(i)),
        )
        for i in range(3)
    ]
    assert all(r.status == 0 for r in send_files(node.port, files))
    node.series_uid = series
    return node


def test_pages_are_open_to_read_but_the_api_still_needs_the_token(ui_node: Any) -> None:
    base = f"http://127.0.0.1:{ui_node.api.port}"
    for path in (
        "/ui",
        "/ui/series",
        f"/ui/series/{ui_node.series_uid}",
        "/ui/forwarding",
        "/ui/devices",
        "/ui/static/ui.css",
        "/ui/fragments/series-rows",
    ):
        status, body, _ = _get(base + path)
        assert status == 200, path
    assert _get(base + "/series")[0] == 401
    assert _get(base + "/devices")[0] == 401
    status, body, _ = _get(base + "/devices", {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and len(json.loads(body)["items"]) == 1
    # the JSON API stays read-only: only /ui takes a POST
    assert _post(base + "/series", "")[0] == 405
    # /devices is documented in the OpenAPI document; the pages are not
    _, doc, _ = _get(base + "/openapi.json", {"Authorization": f"Bearer {TOKEN}"})
    paths = json.loads(doc)["paths"]
    assert "/devices" in paths and not [p for p in paths if p.startswith("/ui")]


def test_actions_need_the_token_and_the_csrf_token(ui_node: Any) -> None:
    base = f"http://127.0.0.1:{ui_node.api.port}"
    assert _post(base + "/ui/actions/pause", "destination=pacs")[0] == 401
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    status, body = _post(base + "/ui/actions/pause", "destination=pacs&csrf=nope", bearer)
    assert status == 403 and "CSRF" in body
    # a page rendered for a signed-in request carries the CSRF token
    _, page, _ = _get(base + "/ui/forwarding", bearer)
    csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    status, _ = _post(
        base + "/ui/actions/pause",
        f"destination=pacs&csrf={csrf}",
        {**bearer, "Origin": "http://evil.example"},
    )
    assert status == 403
    assert _act(base, "pause", "pacs") == 303
    from storage import destinations

    with ui_node.sessions() as session:
        assert destinations.is_paused(session, "pacs")
    # a wrong token at sign-in is refused
    assert _post(base + "/ui/login", "token=wrong")[0] == 401


def test_bad_filters_and_unknown_uids_get_a_clear_error(ui_node: Any) -> None:
    base = f"http://127.0.0.1:{ui_node.api.port}"
    status, body, _ = _get(base + "/ui/series?date_from=21.11.2026")
    assert status == 400 and "expected a date as YYYY-MM-DD" in body
    status, body, _ = _get(base + "/ui/series?verdict=great")
    assert status == 400 and "verdict must be one of" in body
    assert _get(base + "/ui/series/1.2.3")[0] == 404
    assert _get(base + "/ui/instances/1.2.3")[0] == 404
    assert _get(base + "/ui/static/../app.py")[0] == 404
    status, body, _ = _get(base + "/ui/series?modality=CT&date_from=2026-11-21&date_to=2026-11-21")
    assert status == 200 and ui_node.series_uid[-12:] in body
    status, body, _ = _get(base + "/ui/series?calling_ae=NOBODY")
    assert status == 200 and "No series match these filters" in body


def test_without_a_token_actions_are_disabled(node_factory: Callable[..., Any]) -> None:
    node = node_factory()
    base = f"http://127.0.0.1:{node.api.port}"
    status, body = _post(base + "/ui/actions/pause", "destination=pacs&csrf=x")
    assert status == 403 and "no [http] token" in body


def test_devices_on_both_backends(
    node_factory: Callable[..., Any], tmp_path: Path, database_url: str
) -> None:
    """Per-day shares and the swap-rule proposal, computed by SQLite and PostgreSQL alike."""
    from datetime import UTC, datetime

    from scp.services.devices import list_devices

    node = node_factory(make_config(tmp_path / "data", storage={"database_url": database_url}))

    def reversed_ct(ds: Any) -> None:
        ds.ReconstructionDiameter = "8"  # = 0.5 x 16 Columns: Pixel Spacing 0.5\0.8 reversed
        ds.StationName = "BAD*ONE"

    for i in range(3):
        series = new_uid()
        files = [
            write_ct(
                tmp_path / f"b{i}-{k}.dcm",
                series=series,
                instance_number=k + 1,
                pixel_spacing="0.5\\0.8",
                position=(0.0, 0.0, float(k)),
                extra=reversed_ct,
            )
            for k in range(2)
        ]
        send_files(node.port, files, "BADCT")
    send_files(node.port, [write_ct(tmp_path / "good.dcm")], "GOODCT")
    with node.sessions() as session:
        devices = {d["calling_ae_title"]: d for d in list_devices(session)}
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    bad, good = devices["BADCT"], devices["GOODCT"]
    assert (bad["series"], bad["instances"], good["series"]) == (3, 6, 1)
    reversed_share = next(
        f for f in bad["flagged"] if f["code"] == "PIXEL_SPACING_SUSPECT_REVERSED"
    )
    assert reversed_share == {
        "code": "PIXEL_SPACING_SUSPECT_REVERSED",
        "series": 3,
        "share": 1.0,
        "by_day": {today: 1.0},
    }
    assert good["swap_rule"] is None and bad["swap_rule"]["evidence_series"] == 3
    # glob characters of a header value are escaped: the rule matches only this station
    assert 'StationName = "BAD[*]ONE"' in bad["swap_rule"]["toml"]


def _act(base: str, action: str, destination: str) -> int:
    """POST an action as a signed-in operator (bearer token and the page's CSRF token);
    the HTTP status (303 when done)."""
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    _, page, _ = _get(base + "/ui/forwarding", bearer)
    csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any) -> None:
            return None

    req = urllib.request.Request(
        f"{base}/ui/actions/{action}",
        data=f"destination={destination}&csrf={csrf}".encode(),
        method="POST",
        headers=bearer,
    )
    try:
        with urllib.request.build_opener(NoRedirect).open(req, timeout=10) as rsp:
            return int(rsp.status)
    except urllib.error.HTTPError as err:
        return err.code


def test_a_paused_destination_stays_paused_across_a_restart(
    node_factory: Callable[..., Any], tmp_path: Path
) -> None:
    import time

    from scp.config import Destination
    from tests.pacs import Pacs, wait_until

    pacs = Pacs().start()
    try:

        def config() -> Any:
            cfg = make_config(tmp_path / "data", http={"token": TOKEN}, forwarding={"poll_s": 0.2})
            cfg.destinations = [
                Destination(name="pacs", ae_title="PACS", host="127.0.0.1", port=pacs.port)
            ]
            return cfg

        node = node_factory(config())
        base = f"http://127.0.0.1:{node.api.port}"
        assert _act(base, "pause", "pacs") == 303
        files = [write_ct(tmp_path / f"{i}.dcm", instance_number=i + 1) for i in range(3)]
        send_files(node.port, files)
        time.sleep(1.0)
        assert not pacs.uids()  # queued, not sent
        node.stop(grace_s=2)

        again = node_factory(config())
        time.sleep(1.0)
        assert not pacs.uids()  # the pause is in the index, not in the process
        assert _act(f"http://127.0.0.1:{again.api.port}", "resume", "pacs") == 303
        assert wait_until(lambda: len(pacs.uids()) == 3, 20)
    finally:
        pacs.stop()
