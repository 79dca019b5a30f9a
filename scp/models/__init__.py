"""Typed shapes of every answer the node gives (HTTP API, ``--json`` of the CLI, ``check``).

Pure pydantic v2 models, no I/O: services, the API and the CLI validate the dicts they build
against these (``Series.model_validate(d)``) so one series has one shape wherever it is
read, and the HTTP API's OpenAPI document is generated from them.
"""

from __future__ import annotations

from scp.models.base import IsoDateTime, ResponseModel, SeriesState, Verdict, dump, dump_list
from scp.models.check import CheckReport
from scp.models.devices import CodeShare, Device, DevicePage, SwapRuleProposal
from scp.models.findings import Action, CountedFinding, Finding
from scp.models.forwarding import (
    DestinationStatus,
    ForwardingStatus,
    ForwardJob,
    ForwardJobPage,
    JobCounts,
    JobState,
    LastError,
)
from scp.models.instance import CheckedInstance, Instance, InstancePage, PixelSpacing
from scp.models.retention import Deletion, DeletionPage, DeletionResult
from scp.models.series import Series, SeriesPage, SeriesPixelSpacing, SliceSpacing, Stack
from scp.models.service import Health, Problem
from scp.models.study import Study

__all__ = [
    "Action",
    "CheckReport",
    "CheckedInstance",
    "CodeShare",
    "CountedFinding",
    "Deletion",
    "DeletionPage",
    "DeletionResult",
    "DestinationStatus",
    "Device",
    "DevicePage",
    "Finding",
    "ForwardJob",
    "ForwardJobPage",
    "ForwardingStatus",
    "Health",
    "Instance",
    "InstancePage",
    "IsoDateTime",
    "JobCounts",
    "JobState",
    "LastError",
    "PixelSpacing",
    "Problem",
    "ResponseModel",
    "Series",
    "SeriesPage",
    "SeriesPixelSpacing",
    "SeriesState",
    "SliceSpacing",
    "Stack",
    "Study",
    "SwapRuleProposal",
    "Verdict",
    "dump",
    "dump_list",
]
