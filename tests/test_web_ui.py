"""The operators' web page (issue 19) in a real browser: Debian's chromium driven by
Playwright, against a real node on free localhost ports. Screenshots of each page go to
``$SPACING_SCP_ARTIFACTS`` (default ``test-artifacts/``)."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from scp.config import Destination, load_config
from tests.conftest import dcmtk_env, dcmtk_tool, free_port, make_config, send_files
from tests.dicom_factory import new_uid, write_ct
from tests.pacs import Pacs, wait_until

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TOKEN = "ui-test-token"
ARTIFACTS = Path(
    os.environ.get("SPACING_SCP_ARTIFACTS") or Path(__file__).parent.parent / "test-artifacts"
)


def _need_browser() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if sync_playwright is None or not Path(CHROMIUM).exists():
        if os.environ.get("SPACING_SCP_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium or playwright missing (SPACING_SCP_REQUIRE_BROWSER=1)")
        pytest.skip("no chromium/playwright: apt-get install chromium; pip install playwright")
    return sync_playwright


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_playwright = _need_browser()
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    p = context.new_page()
    yield p
    context.close()


def shot(page: Any, name: str) -> Path:
    """A full-page screenshot under the artifacts folder."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def _ui(node: Any) -> str:
    assert node.api is not None
    return f"http://127.0.0.1:{node.api.port}"


def _series(
    folder: Path,
    n: int,
    *,
    skip: tuple[int, ...] = (),
    spacing: str = "0.5\\0.5",
    station: str = "CT1",
    extra: Callable[[Dataset], None] | None = None,
    description: str = "axial",
) -> list[Path]:
    study, series = new_uid(), new_uid()

    def decorate(ds: Dataset) -> None:
        ds.StationName = station
        ds.SeriesDescription = description
        ds.SoftwareVersions = "VB10"
        if extra is not None:
            extra(ds)

    return [
        write_ct(
            folder / f"{series[-8:]}-{i}.dcm",
            study=study,
            series=series,
            instance_number=i + 1,
            position=(0.0, 0.0, 2.0 * i),
            rows=64,
            columns=64,
            pixel_spacing=spacing,
            extra=decorate,
        )
        for i in range(n)
        if i not in skip
    ]


def _reversed_evidence(ds: Dataset) -> None:
    """Reconstruction Diameter (0018,1100) = row spacing x Columns: evidence that Pixel
    Spacing "0.5\\0.8" is reversed (rule 7)."""
    ds.ReconstructionDiameter = "32"


def _sign_in(page: Any, base: str, then: str) -> None:
    page.goto(f"{base}/ui/login?next={then}")
    page.fill("#token", TOKEN)
    page.press("#token", "Enter")
    page.wait_for_url(f"{base}{then}*")


# -- the tests ------------------------------------------------------------------------------


def test_series_sent_by_storescu_appears_within_2_s(
    page: Any, node_factory: Callable[..., Any], tmp_path: Path
) -> None:
    storescu = dcmtk_tool("storescu")
    node = node_factory(http={"token": TOKEN})
    base = _ui(node)
    page.goto(f"{base}/ui/series")
    assert page.locator("tbody#series-rows tr").first.inner_text().startswith("No series")
    files = _series(tmp_path / "in", 3, description="live arrival")
    uid = str(dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    subprocess.run(
        [
            storescu,
            "-aet",
            "MODALITY",
            "-aec",
            "SPACING_SCP",
            "127.0.0.1",
            str(node.port),
            *map(str, files),
        ],
        check=True,
        env=dcmtk_env(),
        capture_output=True,
        timeout=30,
    )
    sent = time.monotonic()
    row = page.locator(f'tr[data-uid="{uid}"]')
    row.wait_for(timeout=2000)
    assert time.monotonic() - sent <= 2.0
    assert "MODALITY" in row.inner_text() and "live arrival" in row.inner_text()
    shot(page, "series-list")
    # the row links to the series page; keyboard: the link is focusable and followed by Enter
    row.locator("a").first.focus()
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/ui/series/{uid}")
    assert page.locator("h1").inner_text().startswith("live arrival")


def test_series_page_marks_the_gap_and_the_swapped_scale_bar(
    page: Any, node_factory: Callable[..., Any], tmp_path: Path
) -> None:
    cfg = make_config(tmp_path / "data", http={"token": TOKEN})
    from scp.pipeline.policy import SwapRule

    cfg.swap_rules = [SwapRule(name="CR3", match={"calling_ae_title": "SWAPPER"})]
    node = node_factory(cfg)
    base = _ui(node)
    gap = _series(tmp_path / "gap", 10, skip=(5,), description="one slice missing")
    swapped = _series(tmp_path / "swap", 5, spacing="0.5\\0.8", description="swapped")
    assert all(r.status == 0 for r in send_files(node.port, gap))
    assert all(r.status in (0, 0xB000) for r in send_files(node.port, swapped, "SWAPPER"))
    gap_uid = str(dcmread(gap[0], stop_before_pixels=True).SeriesInstanceUID)
    swap_uid = str(dcmread(swapped[0], stop_before_pixels=True).SeriesInstanceUID)

    page.goto(f"{base}/ui/series/{gap_uid}")
    marks = page.locator("svg rect.gap")
    assert marks.count() == 1 and marks.first.get_attribute("data-missing") == "1"
    assert "1 missing" in page.locator("figure.plot").inner_text()
    assert page.locator("#img-received").count() == 0  # nothing corrected: one image
    shot(page, "series-gap")

    page.goto(f"{base}/ui/series/{swap_uid}")
    page.locator("#img-received").wait_for()
    effective = page.request.get(f"{base}/ui/series/{swap_uid}/image.png?spacing=effective")
    received = page.request.get(f"{base}/ui/series/{swap_uid}/image.png?spacing=received")
    assert effective.headers["content-type"] == "image/png"
    assert _bar_lengths(effective.body()) != _bar_lengths(received.body())
    # stored 0.8 x 0.5 mm: 10 mm is 20 columns across and 12.5 rows down (rounded half
    # to even); as received (0.5 x 0.8) the other way round
    assert _bar_lengths(effective.body()) == (20, 12)
    assert _bar_lengths(received.body()) == (12, 20)
    assert "PIXEL_SPACING_SWAPPED" in page.locator("#findings-h + .scroll").inner_text()
    assert "0.5\\0.8" in page.locator("#edits-h ~ .scroll").first.inner_text()
    shot(page, "series-swapped")

    page.locator("#instances-h ~ .scroll a").first.click()
    assert "changed" in page.locator("tr.changed").first.inner_text()
    shot(page, "instance")
    # downloads need the token
    sop = page.url.rsplit("/", 1)[1]
    assert page.request.get(f"{base}/ui/instances/{sop}/original.dcm").status == 401
    _sign_in(page, base, f"/ui/instances/{sop}")
    original = page.request.get(f"{base}/ui/instances/{sop}/original.dcm")
    assert original.status == 200 and b"DICM" in original.body()[:200]


def _bar_lengths(png: bytes) -> tuple[int, int]:
    """Lengths, pixels, of the horizontal and vertical scale bars (the bar colour) of a
    PNG rendered by scp.services.render."""
    import zlib

    import numpy as np

    pos, chunks, width, height = 8, b"", 0, 0
    while pos < len(png):
        size = int.from_bytes(png[pos : pos + 4], "big")
        kind = png[pos + 4 : pos + 8]
        data = png[pos + 8 : pos + 8 + size]
        if kind == b"IHDR":
            width, height = int.from_bytes(data[:4], "big"), int.from_bytes(data[4:8], "big")
        elif kind == b"IDAT":
            chunks += data
        pos += 12 + size
    raw = np.frombuffer(zlib.decompress(chunks), dtype=np.uint8).reshape(height, width * 3 + 1)
    rgb = raw[:, 1:].reshape(height, width, 3)
    bar = (rgb[:, :, 0] == 255) & (rgb[:, :, 1] == 200) & (rgb[:, :, 2] == 0)
    row = height - 9  # the horizontal bar's lowest row
    return int(bar[row].sum()), int(bar[:, 9].sum())


def test_retry_dead_in_the_browser_needs_the_token(
    page: Any, node_factory: Callable[..., Any], tmp_path: Path
) -> None:
    answer = {"status": 0xA700}
    pacs = Pacs(status_for=lambda _c: answer["status"]).start()
    try:
        cfg = make_config(
            tmp_path / "data", http={"token": TOKEN}, forwarding={"poll_s": 0.2, "lease_s": 5.0}
        )
        cfg.destinations = [
            Destination(
                name="pacs",
                ae_title="PACS",
                host="127.0.0.1",
                port=pacs.port,
                max_attempts=1,
                retry_initial_s=0.1,
                retry_max_s=0.5,
            )
        ]
        node = node_factory(cfg)
        base = _ui(node)
        files = _series(tmp_path / "in", 4)
        send_files(node.port, files)
        assert wait_until(lambda: _dead(node) == 4, 20)
        answer["status"] = 0x0000

        page.goto(f"{base}/ui/forwarding")
        assert page.locator("text=Retry dead").count() == 0  # read-only without the token
        # without the token (and its CSRF token) the action is refused
        refused = page.request.post(
            f"{base}/ui/actions/retry-dead", form={"destination": "pacs", "csrf": "x"}
        )
        assert refused.status == 401
        assert _dead(node) == 4
        shot(page, "forwarding-dead")

        _sign_in(page, base, "/ui/forwarding")
        # signed in, a forged form without the page's CSRF token is still refused
        forged = page.request.post(
            f"{base}/ui/actions/retry-dead", form={"destination": "pacs", "csrf": "forged"}
        )
        assert forged.status == 403 and _dead(node) == 4
        page.get_by_role("button", name="Retry dead").click()
        page.wait_for_url("**/ui/forwarding?done=*")
        assert "4 dead job(s) of pacs queued again" in page.locator(".notice").inner_text()
        assert wait_until(lambda: len(pacs.uids()) == 4, 20)
        assert {s.sop_instance_uid for s in pacs.stored} == {_sop(f) for f in files}
        page.reload()
        shot(page, "forwarding")

        # pause holds new jobs; resume lets them go
        page.get_by_role("button", name="Pause").click()
        page.wait_for_url("**done=pacs+paused*")
        more = _series(tmp_path / "more", 2)
        send_files(node.port, more)
        time.sleep(1.0)
        assert not ({_sop(f) for f in more} & set(pacs.uids()))
        page.get_by_role("button", name="Resume").click()
        page.wait_for_url("**done=pacs+resumed*")
        assert wait_until(lambda: {_sop(f) for f in more} <= set(pacs.uids()), 20)

        page.goto(f"{base}/ui")
        assert page.locator(".card").count() == 4
        shot(page, "overview")
    finally:
        pacs.stop()


def _sop(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _dead(node: Any) -> int:
    from storage import outbox

    with node.sessions() as session:
        return int(outbox.summary(session)[0]["counts"]["dead"]) if outbox.summary(session) else 0


def test_devices_flag_the_reversed_one_and_its_rule_corrects_the_next_series(
    page: Any, node_factory: Callable[..., Any], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    node = node_factory(make_config(data, http={"token": TOKEN}))
    base = _ui(node)
    for i in range(2):
        send_files(node.port, _series(tmp_path / f"good{i}", 3, station="GOODCT"), "GOODCT")
        bad = _series(
            tmp_path / f"bad{i}", 3, spacing="0.5\\0.8", station="BADCT", extra=_reversed_evidence
        )
        send_files(node.port, bad, "BADCT")

    page.goto(f"{base}/ui/devices")
    rules = page.locator("pre.swap-rule")
    assert rules.count() == 1
    assert page.locator("tr.proposal").get_attribute("data-ae") == "BADCT"
    toml = rules.inner_text()
    shot(page, "devices")

    # the JSON API says the same (with the bearer token)
    import json

    req = urllib.request.Request(f"{base}/devices", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as rsp:
        items = json.loads(rsp.read())["items"]
    proposals = [d for d in items if d["swap_rule"]]
    assert [d["calling_ae_title"] for d in proposals] == ["BADCT"]
    assert proposals[0]["swap_rule"]["toml"] == toml.rstrip("\n") + "\n"
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{base}/devices", timeout=10)
    assert err.value.code == 401

    # pasted into the configuration, the rule corrects the next series from that device
    node.stop(grace_s=2)
    conf = tmp_path / "spacing-scp.toml"
    conf.write_text(
        f'[storage]\ndata_dir = "{data}"\nmin_free_mb = 0\n[node]\nport = {free_port()}\n'
        f'host = "127.0.0.1"\n[http]\nport = 0\ntoken = "{TOKEN}"\n\n{toml}'
    )
    cfg = load_config(conf, environ={})
    assert [r.name for r in cfg.swap_rules] == ["BADCT (BADCT) writes Pixel Spacing column first"]
    again = node_factory(cfg)
    nxt = _series(
        tmp_path / "next", 3, spacing="0.5\\0.8", station="BADCT", extra=_reversed_evidence
    )
    send_files(again.port, nxt, "BADCT")
    with again.sessions() as session:
        got = again.queries.get_instance(session, _sop(nxt[0]))
    assert (got["pixel_spacing"]["row_mm"], got["pixel_spacing"]["column_mm"]) == (0.8, 0.5)
    assert "PIXEL_SPACING_SWAPPED" in {f["code"] for f in got["findings"]}
    assert "PIXEL_SPACING_SUSPECT_REVERSED" not in {f["code"] for f in got["findings"]}
    page.goto(f"{_ui(again)}/ui/devices")
    assert page.locator("pre.swap-rule").count() == 0  # covered by the configured rule now


def test_tablet_width_is_readable(
    page: Any, node_factory: Callable[..., Any], tmp_path: Path
) -> None:
    node = node_factory()
    send_files(node.port, _series(tmp_path / "in", 3))
    page.set_viewport_size({"width": 820, "height": 1180})
    for path, name in (("/ui", "overview-tablet"), ("/ui/series", "series-list-tablet")):
        page.goto(f"{_ui(node)}{path}")
        # the page itself does not scroll sideways: wide tables scroll in their own box
        assert page.evaluate("document.documentElement.scrollWidth") <= 820
        shot(page, name)
    # keyboard: the skip link is the first stop and moves focus to the content
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
