"""The persisted series state JSON (``series.geometry_state``) keeps its format.

``tests/fixtures/series_state_v1.json`` was produced one slice at a time (as the index does)
by the code before ``scp.series`` was split into modules; it holds five stacks (a main stack
with a missing slice and IOPs drifting within 1e-4, a localizer, a clean 4D repeat, an NM
stack with a negative Spacing Between Slices, a stack of invalid IOP) and mixed Pixel Spacing.
``series_state_v1_summary.json`` is the summary that code computed from it, less the
"suspect reversed" note it put on the isotropic consensus 0.488281\\0.488281 (rule 32: a
reversal needs anisotropy).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scp.series import SeriesState

FIXTURES = Path(__file__).parent / "fixtures"
STATE = (FIXTURES / "series_state_v1.json").read_text(encoding="utf-8").strip()
SUMMARY = json.loads((FIXTURES / "series_state_v1_summary.json").read_text(encoding="utf-8"))


def test_stored_state_round_trips_byte_identical() -> None:
    state = SeriesState.from_json(STATE)
    assert state.to_json() == STATE
    assert SeriesState.from_dict(json.loads(STATE)).to_dict() == json.loads(STATE)


@pytest.mark.parametrize("receiving", [True, False])
def test_stored_state_summary_unchanged(receiving: bool) -> None:
    summary = SeriesState.from_json(STATE).summary(receiving).to_dict()
    expected = SUMMARY["receiving" if receiving else "complete"]
    assert json.loads(json.dumps(summary)) == expected
