"""The forwarding outbox (``GET /forwarding``, ``GET /forwarding/jobs``, ``forward status``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from scp.models.base import IsoDateTime, ResponseModel

#: ``pending`` -> ``in_flight`` (claimed under a lease) -> ``done``, back to ``pending`` for a
#: retry, or ``dead`` after the last attempt (``storage.outbox.STATES``).
JobState = Literal["pending", "in_flight", "done", "dead"]


class JobCounts(ResponseModel):
    """Jobs of one destination in each state."""

    pending: int
    in_flight: int
    done: int
    dead: int


class LastError(ResponseModel):
    """The most recent error of a destination's jobs."""

    job_id: int
    state: JobState = Field(description="the job's state now")
    message: str = Field(description="the error, e.g. the C-STORE status 0xA700 answered")
    at: IsoDateTime | None = Field(description="when, UTC")


class DestinationStatus(ResponseModel):
    """One destination (``[[destinations]]``) of the forwarding queue."""

    destination: str = Field(description="the destination's name")
    counts: JobCounts
    oldest_pending_age_s: float | None = Field(
        description="age of the oldest job not yet delivered (pending or in_flight), seconds"
    )
    last_error: LastError | None


class ForwardingStatus(ResponseModel):
    """``GET /forwarding``: configured destinations even while idle, and any the queue
    still holds jobs for."""

    destinations: list[DestinationStatus]


class ForwardJob(ResponseModel):
    """One instance to send to one destination."""

    id: int
    destination: str
    state: JobState
    attempts: int = Field(description="C-STORE attempts made")
    sop_instance_uid: str = Field(description="SOP Instance UID (0008,0018)")
    series_instance_uid: str = Field(description="Series Instance UID (0020,000E)")
    sop_class_uid: str = Field(description="SOP Class UID (0008,0016)")
    transfer_syntax_uid: str = Field(description="Transfer Syntax UID (0002,0010) as stored")
    next_attempt_at: IsoDateTime | None = Field(description="when the job is due, UTC")
    lease_until: IsoDateTime | None = Field(description="end of the worker's claim, UTC")
    claimed_by: str | None = Field(description="the worker holding the job")
    last_status: int | None = Field(
        description="last C-STORE status the destination answered (PS3.4 B.2.3)"
    )
    last_status_hex: str | None = Field(description="the same as 0xHHHH")
    last_error: str | None
    created_at: IsoDateTime | None
    updated_at: IsoDateTime | None
    done_at: IsoDateTime | None


class ForwardJobPage(ResponseModel):
    """A page of ``GET /forwarding/jobs``, newest first."""

    items: list[ForwardJob]
    next: str | None = Field(description="cursor of the next page; null on the last")
