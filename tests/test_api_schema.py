"""Every answer of the HTTP API matches its generated OpenAPI document, ``check --json``
and the CLI's ``--json`` match the same models, and one series has one shape everywhere."""

from __future__ import annotations

import http.client
import json
import logging
import re
import subprocess
import sys
import time
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset

from scp import models
from scp import status as dimse
from scp.api.app import build_app
from scp.api.server import ApiServer
from scp.cli import main as cli_main
from scp.config import Destination
from scp.pipeline.model import Severity
from scp.pipeline.policy import SwapRule
from scp.series import SeriesState, SliceGeometry, compose_series
from scp.services import series_query as queries
from storage import outbox
from storage.db import make_engine, make_session_factory
from tests.conftest import free_port, make_config, send_files
from tests.dicom_factory import ct_dataset, new_uid, write
from tests.pacs import wait_until
from tests.schema_check import SchemaChecker, SchemaError
from tests.series_builders import MR, regular, write_enhanced_mr, write_series

TOKEN = "schema-token"
#: The node's settings for check and the CLI: the swap rule and the settling time.
CONFIG_TOML = (
    '[series]\nquiet_seconds = 1.0\n[[swap_rules]]\nname = "ACME"\n'
    '[swap_rules.match]\nManufacturer = "ACME"\n'
)
PROBLEM = "application/problem+json"


# -- the series every scenario holds ------------------------------------------------------------


def _no_plane(ds: Dataset) -> None:
    del ds.ImagePositionPatient
    del ds.ImageOrientationPatient


def write_scenarios(folder: Path) -> dict[str, str]:
    """Series of every shape the API describes; returns their UIDs by name."""
    uids: dict[str, str] = {}
    positions = regular(12)
    del positions[5]
    uids["missing_slice"], _ = write_series(folder / "missing", positions)
    uids["repeat_4d"], _ = write_series(folder / "4d", regular(5) * 2, seed=2)
    uids["mr"], _ = write_series(
        folder / "mr", regular(6, 3.0), modality="MR", sop_class=MR, pixel_spacing="0.9\\0.9"
    )
    uids["enhanced_mr"], _ = write_enhanced_mr(folder / "emr" / "emr.dcm", frames=8)
    study, series = new_uid(), new_uid()
    for i in range(3):
        ds = ct_dataset(study=study, series=series, instance_number=i + 1, extra=_no_plane)
        write(ds, folder / "flat" / f"{i}.dcm")
    uids["no_plane_geometry"] = series
    return uids


@dataclass
class Scene:
    """A node (token, one forwarding destination that refuses, the ACME swap rule) that
    received :func:`write_scenarios`, settled."""

    node: Any
    folder: Path
    uids: dict[str, str]
    config: Path
    seen: dict[tuple[str, int], int] = field(default_factory=dict)

    def request(
        self, path: str, token: str | None = TOKEN, method: str = "GET"
    ) -> tuple[int, str, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.node.api.port, timeout=30)
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        conn.request(method, path, headers=headers)
        rsp = conn.getresponse()
        body = rsp.read()
        conn.close()
        return rsp.status, rsp.headers.get("Content-Type", ""), body


@pytest.fixture
def scene(node_factory: Callable[..., Any], tmp_path: Path) -> Iterator[Scene]:
    cfg = make_config(
        tmp_path / "data",
        http={"token": TOKEN},
        series={"quiet_seconds": 1.0},
        forwarding={"poll_s": 0.2, "lease_s": 5.0},
    )
    cfg.swap_rules = [SwapRule(name="ACME", match={"Manufacturer": "ACME"})]
    cfg.destinations = [
        Destination(
            name="pacs",
            ae_title="PACS",
            host="127.0.0.1",
            port=free_port(),  # nobody listens: every job fails
            max_attempts=1,
            retry_initial_s=0.1,
            retry_max_s=0.5,
        )
    ]
    node = node_factory(cfg)
    folder = tmp_path / "in"
    uids = write_scenarios(folder)
    results = send_files(node.port, sorted(p for p in folder.rglob("*.dcm")))
    assert all(r.status is not None and dimse.is_stored(r.status) for r in results), results
    config = tmp_path / "check.toml"
    config.write_text(CONFIG_TOML)

    def errors_recorded() -> bool:
        with node.sessions() as session:
            return outbox.summary(session, ["pacs"])[0]["last_error"] is not None

    assert wait_until(errors_recorded, timeout=30)
    time.sleep(1.2)  # [series] quiet_seconds: every series settled, like check's
    yield Scene(node, folder, uids, config)


# -- checking answers against the document ------------------------------------------------------


def _operation(doc: dict[str, Any], path: str) -> tuple[str, dict[str, Any]] | None:
    bare = path.split("?", 1)[0].rstrip("/") or "/"
    for template, item in doc["paths"].items():
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
        if re.match(pattern, bare):
            return template, item["get"]
    return None


def check_answer(
    scene: Scene, doc: dict[str, Any], path: str, answer: tuple[int, str, bytes]
) -> Any:
    """Validate one answer against the OpenAPI document; return its decoded body.

    A documented (operation, status) is checked against that response's schema for its
    media type; what the guard answers before any route (404 for an unknown path, 405,
    414) against the Problem component.
    """
    status, ctype, body = answer
    checker = SchemaChecker(doc)
    found = _operation(doc, path)
    responses = found[1]["responses"] if found else {}
    if str(status) in responses:
        content = responses[str(status)]["content"]
        media = next((k for k in content if ctype.startswith(k)), None)
        assert media is not None, (path, status, ctype, list(content))
        value = json.loads(body) if "json" in media else body.decode()
        checker.check(value, content[media]["schema"], f"{path} {status}")
        assert found is not None
        scene.seen[(found[0], status)] = scene.seen.get((found[0], status), 0) + 1
        return value
    assert status in (404, 405, 414), (path, status, body[:200])
    assert ctype == PROBLEM
    value = json.loads(body)
    checker.check(value, {"$ref": "#/components/schemas/Problem"}, f"{path} {status}")
    return value


def _pages(scene: Scene, doc: dict[str, Any], first: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    path: str | None = first
    while path is not None:
        page = check_answer(scene, doc, path, scene.request(path))
        items += page["items"]
        sep = "&" if "?" in first else "?"
        path = f"{first}{sep}cursor={page['next']}" if page["next"] else None
    return items


def test_every_api_answer_matches_the_generated_openapi(scene: Scene) -> None:
    status, ctype, body = scene.request("/openapi.json")
    assert status == 200 and ctype.startswith("application/json")
    doc = json.loads(body)
    answer = lambda path, **kw: check_answer(scene, doc, path, scene.request(path, **kw))  # noqa: E731

    assert answer("/health", token=None)["status"] == "ok"
    series = _pages(scene, doc, "/series?limit=2")
    assert {s["series_instance_uid"] for s in series} == set(scene.uids.values())
    assert answer("/series/")["items"]  # a trailing slash is the same path, no redirect
    assert {s["modality"] for s in answer("/series?modality=MR")["items"]} == {"MR"}
    missing = answer("/series?state=settled&code=SLICE_MISSING&modality=")["items"]
    assert [s["series_instance_uid"] for s in missing] == [scene.uids["missing_slice"]]
    for uid in scene.uids.values():
        one = answer(f"/series/{uid}")
        assert one == next(s for s in series if s["series_instance_uid"] == uid)
        instances = _pages(scene, doc, f"/series/{uid}/instances?limit=3")
        assert len(instances) == one["instance_count"]
        assert answer(f"/instances/{instances[0]['sop_instance_uid']}") == instances[0]
    flat = answer(f"/series/{scene.uids['no_plane_geometry']}")
    assert flat["stacks"] == [] and flat["slice_spacing"]["distinct_gaps_mm"] == []
    assert answer(f"/series/{scene.uids['repeat_4d']}")["slice_spacing"]["repeats"] == 2
    corrected = answer(f"/series/{scene.uids['missing_slice']}/instances?limit=1")["items"][0]
    assert corrected["actions"][0]["attribute"] == "PixelSpacing"  # the ACME swap rule

    [pacs] = answer("/forwarding")["destinations"]
    assert pacs["destination"] == "pacs" and pacs["last_error"] is not None
    jobs = _pages(scene, doc, "/forwarding/jobs?limit=7")
    assert len(jobs) == len(list(scene.folder.rglob("*.dcm")))  # one per instance
    answer("/forwarding/jobs?destination=pacs&state=dead&series_instance_uid=1.2.3")
    assert "spacing_scp_index_series 5" in answer("/metrics")
    devices = answer("/devices")["items"]
    assert answer("/deletions") == {"items": [], "next": None}
    assert sum(d["instances"] for d in devices) == len(list(scene.folder.rglob("*.dcm")))

    for path, status in [
        ("/series?limit=0", 400),
        ("/series?limit=x", 400),
        ("/series?limit=1001", 400),
        ("/series?cursor=zzz", 400),
        ("/series?state=sleeping", 400),
        ("/series?colour=red", 400),
        (f"/series/{scene.uids['mr']}/instances?cursor=zzz", 400),
        ("/forwarding/jobs?state=lost", 400),
        ("/forwarding/jobs?colour=red", 400),
        ("/series/1.2.3.404", 404),
        ("/series/1.2.3.404/instances", 404),
        ("/instances/1.2.3.404", 404),
        ("/nothing/here", 404),
        ("/series?x=" + "a" * 5000, 414),
    ]:
        got = scene.request(path)
        assert got[0] == status, (path, got)
        problem = check_answer(scene, doc, path, got)
        assert problem["status"] == status and problem["detail"]
    assert (
        "unknown parameter 'colour'" in json.loads(scene.request("/series?colour=red")[2])["detail"]
    )
    for token in (None, "wrong"):
        for path in ("/series", "/openapi.json", "/nothing/here"):
            got = scene.request(path, token=token)
            assert got[0] == 401, (path, got)
            check_answer(scene, doc, "/series", got)
    got = scene.request("/series", method="POST")
    assert got[0] == 405
    check_answer(scene, doc, "/series", got)
    status, _, body = scene.request("/series", method="HEAD")
    assert status == 200 and body == b""

    # every operation answered 200 at least once, and every answer status is documented
    # (the DICOMweb routes answer DICOM media types: tests/test_dicomweb.py)
    operations = {
        t for t, item in doc["paths"].items() if "get" in item and not t.startswith("/dicom-web")
    }
    assert {t for t, s in scene.seen if s == 200} == operations
    for (template, status), _ in scene.seen.items():
        assert str(status) in doc["paths"][template]["get"]["responses"]


def test_check_json_and_cli_json_are_the_api_shapes(
    scene: Scene, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = json.loads(scene.request("/openapi.json")[2])
    checker = SchemaChecker(doc)
    folder = str(scene.folder)
    out = subprocess.run(
        [sys.executable, "-m", "scp", "check", "--json", "--config", str(scene.config), folder],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    report_schema = models.CheckReport.model_json_schema(mode="serialization")
    SchemaChecker(report_schema).check(report, report_schema)
    assert len(report["series"]) == len(scene.uids)
    for offline in report["series"]:
        checker.check(offline, {"$ref": "#/components/schemas/Series"})
        online = json.loads(scene.request(f"/series/{offline['series_instance_uid']}")[2])
        assert offline["last_received_at"] is None and online["last_received_at"]
        assert {**offline, "last_received_at": online["last_received_at"]} == online

    base = ["--config", str(scene.config), "--data-dir", str(scene.node.cfg.data_dir)]
    uid = scene.uids["enhanced_mr"]
    assert cli_main(["series", "show", uid, "--json", *base]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(scene.request(f"/series/{uid}")[2])
    assert cli_main(["series", "list", "--json", *base]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed == json.loads(scene.request("/series?limit=1000")[2])["items"]
    assert cli_main(["instances", "--json", *base]) == 0
    for item in json.loads(capsys.readouterr().out):
        checker.check(item, {"$ref": "#/components/schemas/Instance"})
    assert cli_main(["forward", "status", "--json", *base]) == 0
    for row in json.loads(capsys.readouterr().out):
        checker.check(row, {"$ref": "#/components/schemas/DestinationStatus"})
    assert cli_main(["studies", "--json", *base]) == 0
    studies = json.loads(capsys.readouterr().out)
    study_schema = models.Study.model_json_schema(mode="serialization")
    for study in studies:
        SchemaChecker(study_schema).check(study, study_schema)
    assert len(studies) == len(scene.uids)


# -- errors that must not leak ------------------------------------------------------------------


class _Broken(queries.IndexQueries):
    """Fails the way a bug would: an exception, and an answer of the wrong shape."""

    def get_series(self, session: Any, series_instance_uid: str) -> dict[str, Any]:
        raise RuntimeError("secret internal detail")

    def get_instance(self, session: Any, sop_instance_uid: str) -> dict[str, Any]:
        return {"sop_instance_uid": sop_instance_uid, "password": "secret internal detail"}

    def list_instances(self, *args: Any, **kwargs: Any) -> tuple[list[dict[str, Any]], None]:
        # A ValueError is not the client's fault by itself (a corrupt stored state, say).
        raise ValueError("geometry_state of series 7 is not JSON: secret internal detail")


@contextmanager
def _serve(app: Any) -> Iterator[ApiServer]:
    api = ApiServer(app, "127.0.0.1", 0)
    api.start()
    try:
        yield api
    finally:
        api.stop()


def _get(port: int, path: str) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path)
    rsp = conn.getresponse()
    body = rsp.read()
    conn.close()
    return rsp.status, rsp.headers.get("Content-Type", ""), body


def test_internal_errors_are_500_problems_without_detail(
    node: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="spacing_scp.http")
    app = build_app(node.sessions, _Broken(60.0), "SPACING_SCP")
    doc = app.openapi()
    with _serve(app) as api:
        for path in ("/series/1.2.3", "/instances/1.2.3", "/series/1.2.3/instances"):
            status, ctype, body = _get(api.port, path)
            assert (status, ctype) == (500, PROBLEM)
            assert json.loads(body) == {
                "type": "about:blank",
                "title": "Internal Server Error",
                "status": 500,
            }
            operation = _operation(doc, path)
            assert operation is not None and "500" in operation[1]["responses"]
    assert any("HTTP GET /series/1.2.3 failed" in r.getMessage() for r in caplog.records)

    # an unreachable index: /health is 503 with the Health shape
    engine = make_engine(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'index.sqlite3'}")
    app = build_app(make_session_factory(engine), queries.IndexQueries(60.0), "SPACING_SCP")
    with _serve(app) as api:
        status, ctype, body = _get(api.port, "/health")
    assert status == 503 and ctype == "application/json"
    health = json.loads(body)
    down = doc["paths"]["/health"]["get"]["responses"]["503"]["content"]["application/json"]
    SchemaChecker(doc).check(health, down["schema"])
    assert health["status"] == "error" and health["detail"] == "OperationalError"
    engine.dispose()


# -- the document and the models themselves -----------------------------------------------------


def test_openapi_document_is_generated_from_the_models(node: Any) -> None:
    app = build_app(node.sessions, node.queries, "SPACING_SCP", destinations=["pacs"])
    doc = app.openapi()
    assert doc["openapi"].startswith("3.1")
    assert set(doc["paths"]) == {
        "/health",
        "/series",
        "/series/{uid}",
        "/series/{uid}/instances",
        "/instances/{uid}",
        "/metrics",
        "/forwarding",
        "/forwarding/jobs",
        "/devices",
    }
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    assert doc["components"]["securitySchemes"] == {"bearer": {"type": "http", "scheme": "bearer"}}
    assert doc["paths"]["/health"]["get"]["security"] == []
    for template, item in doc["paths"].items():
        responses = item["get"]["responses"]
        assert "422" not in responses, template
        for status, response in responses.items():
            if status.startswith(("4", "5")) and status != "503":
                assert list(response["content"]) == [PROBLEM], (template, status)
    for name in ("Series", "Stack", "SliceSpacing", "Instance", "ForwardJob", "Problem"):
        assert schemas[name]["additionalProperties"] is False, name
    series = schemas["Series"]
    assert set(series["required"]) == set(series["properties"])  # every key always sent
    assert series["properties"]["slice_spacing"]["$ref"].endswith("/SliceSpacing")
    assert {"stacks", "distinct_gaps_mm", "repeats"} <= set(series["properties"]) | set(
        schemas["SliceSpacing"]["properties"]
    )
    params = {p["name"] for p in doc["paths"]["/series"]["get"]["parameters"]}
    assert params == {"study_instance_uid", "modality", "code", "state", "limit", "cursor"}
    # every schema in the document is one the checker above understands completely
    checker = SchemaChecker(doc)
    for name, schema in schemas.items():
        checker.lint(schema, name)
    for template, item in doc["paths"].items():
        for param in item["get"].get("parameters", []):
            checker.lint(param["schema"], f"{template} {param['name']}")
        for status, response in item["get"]["responses"].items():
            for media, content in response.get("content", {}).items():
                checker.lint(content["schema"], f"{template} {status} {media}")
    limit = next(p for p in doc["paths"]["/series"]["get"]["parameters"] if p["name"] == "limit")
    assert (limit["schema"]["minimum"], limit["schema"]["maximum"]) == (1, 1000)
    metrics = doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain; version=0.0.4"]


def test_literals_are_the_domain_values() -> None:
    assert typing.get_args(models.JobState) == outbox.STATES
    assert typing.get_args(models.SeriesState) == queries.STATES
    assert set(typing.get_args(models.Verdict)) == {"ok", *(s.value for s in Severity)}


def test_slice_spacing_has_the_same_keys_with_and_without_plane_geometry() -> None:
    slices = [
        SliceGeometry("1.2.3", 16, 16, (1, 0, 0, 0, 1, 0), (0.0, 0.0, z), (0.5, 0.5), 1.0)
        for z in (0.0, 1.0, 2.0)
    ]
    geometry = SeriesState.from_slices(slices).summary(False).to_dict()
    fields = {"series_instance_uid": "1.2.3.4", "instance_count": 3}
    common = {"instance_findings": [], "spacing": None, "spacing_consistent": True}
    with_plane = compose_series(fields=fields, state="settled", geometry=geometry, **common)
    without = compose_series(fields=fields, state="receiving", geometry=None, **common)
    assert set(with_plane["slice_spacing"]) == set(without["slice_spacing"])
    assert set(without["slice_spacing"]) == set(models.SliceSpacing.model_fields)
    assert without["slice_spacing"]["provisional"] is True


def test_the_schema_checker_rejects_what_it_should() -> None:
    schema = models.SliceSpacing.model_json_schema(mode="serialization")
    checker = SchemaChecker(schema)
    good = compose_series(
        fields={},
        state="settled",
        geometry=None,
        instance_findings=[],
        spacing=None,
        spacing_consistent=True,
    )["slice_spacing"]
    checker.check(good, schema)
    for bad in (
        {**good, "extra": 1},
        {k: v for k, v in good.items() if k != "repeats"},
        {**good, "mm": "1.0"},
        {**good, "distinct_gaps_mm": [None]},
    ):
        with pytest.raises(SchemaError):
            checker.check(bad, schema)
    with pytest.raises(SchemaError, match="not understood"):
        checker.check(1, {"type": "integer", "multipleOf": 2})
