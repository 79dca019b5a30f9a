"""SQLAlchemy models of the index: studies, series, instances, findings, actions.

Column names are DICOM keywords in snake case (``series_instance_uid``), so
the index reads like the standard.  Schema changes go through Alembic
(``storage/migrations``); never ``create_all`` in production.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class Study(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    patient_id: Mapped[str | None] = mapped_column(String(64), index=True)
    #: Patient's Name (0010,0010) as received: PN, up to three component groups.
    patient_name: Mapped[str | None] = mapped_column(String(324), index=True)
    accession_number: Mapped[str | None] = mapped_column(String(64), index=True)
    study_date: Mapped[str | None] = mapped_column(String(8), index=True)
    study_time: Mapped[str | None] = mapped_column(String(32))
    study_description: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    series: Mapped[list[Series]] = relationship(back_populates="study")


class Series(Base):
    __tablename__ = "series"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    modality: Mapped[str | None] = mapped_column(String(16), index=True)
    manufacturer: Mapped[str | None] = mapped_column(String(64))
    manufacturer_model_name: Mapped[str | None] = mapped_column(String(64))
    station_name: Mapped[str | None] = mapped_column(String(16))
    #: Software Versions (0018,1020), all values as received (backslash-separated).
    software_versions: Mapped[str | None] = mapped_column(String(64))
    series_number: Mapped[str | None] = mapped_column(String(12))
    series_description: Mapped[str | None] = mapped_column(String(64))
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    corrected_instances: Mapped[int] = mapped_column(Integer, default=0)
    #: Instances of this series deleted (by retention or by hand, :mod:`storage.retention`):
    #: the geometry state still describes the series as received.
    deleted_instances: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: Incremental geometry state (``scp.series.SeriesState`` JSON), rules 21-30.
    geometry_state: Mapped[str | None] = mapped_column(Text)
    #: Series finding codes as ",CODE,CODE," for filtering (recomputed on every instance).
    finding_codes: Mapped[str] = mapped_column(String(1024), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(back_populates="series")


class Instance(Base):
    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    instance_number: Mapped[str | None] = mapped_column(String(12))
    number_of_frames: Mapped[int | None] = mapped_column(Integer)
    rows: Mapped[int | None] = mapped_column(Integer)
    columns: Mapped[int | None] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    path: Mapped[str] = mapped_column(String(255))
    original_path: Mapped[str | None] = mapped_column(String(255))
    calling_ae_title: Mapped[str] = mapped_column(String(16), index=True)
    called_ae_title: Mapped[str] = mapped_column(String(16))
    peer_address: Mapped[str | None] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    receive_count: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[int] = mapped_column(Integer)
    # Spacing as received (raw text, exactly as in the data set) and as judged.
    received_pixel_spacing: Mapped[str | None] = mapped_column(String(255))
    pixel_spacing_row_mm: Mapped[float | None] = mapped_column(Float)
    pixel_spacing_column_mm: Mapped[float | None] = mapped_column(Float)
    # Decimal places each value was written with (rule 31; NULL when unknown): the series
    # consensus compares values to the precision of the less precise one.
    pixel_spacing_row_decimals: Mapped[int | None] = mapped_column(Integer)
    pixel_spacing_column_decimals: Mapped[int | None] = mapped_column(Integer)
    spacing_source: Mapped[str | None] = mapped_column(String(32))
    calibration: Mapped[str | None] = mapped_column(String(64))
    verdict: Mapped[str] = mapped_column(String(16), default="ok", index=True)
    # Geometry for the series summary (PS3.3 C.7.6.2), as received.
    frame_of_reference_uid: Mapped[str | None] = mapped_column(String(64))
    image_position_patient: Mapped[str | None] = mapped_column(String(255))
    image_orientation_patient: Mapped[str | None] = mapped_column(String(255))
    slice_thickness: Mapped[float | None] = mapped_column(Float)
    spacing_between_slices: Mapped[float | None] = mapped_column(Float)
    geometry: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)

    series: Mapped[Series] = relationship(back_populates="instances")
    findings: Mapped[list[InstanceFinding]] = relationship(
        back_populates="instance", cascade="all, delete-orphan"
    )
    actions: Mapped[list[InstanceAction]] = relationship(
        back_populates="instance", cascade="all, delete-orphan"
    )


class InstanceFinding(Base):
    __tablename__ = "instance_findings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance_id: Mapped[int] = mapped_column(
        ForeignKey("instances.id", ondelete="CASCADE"), index=True
    )
    code: Mapped[str] = mapped_column(String(64), index=True)
    severity: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    rule: Mapped[str | None] = mapped_column(String(16))
    tag: Mapped[str | None] = mapped_column(String(16))

    instance: Mapped[Instance] = relationship(back_populates="findings")


class InstanceAction(Base):
    """An edit the node applied to an instance (recorded in the file too, PS3.3 C.12.1.1.9)."""

    __tablename__ = "instance_actions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance_id: Mapped[int] = mapped_column(
        ForeignKey("instances.id", ondelete="CASCADE"), index=True
    )
    code: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(16))
    attribute: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(255))
    old: Mapped[str | None] = mapped_column(Text)
    new: Mapped[str | None] = mapped_column(Text)

    instance: Mapped[Instance] = relationship(back_populates="actions")


class InstancePosition(Base):
    """A slice's quantized position along its stack normal (rule 23), for neighbour look-ups.

    One row per single-frame instance, or per frame of an enhanced multi-frame instance;
    a deleted instance's rows stay (``instance_id`` NULL) until its series goes.
    """

    __tablename__ = "instance_positions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"))
    #: ``NULL`` once the instance was deleted (:mod:`storage.retention`): the slice stays,
    #: so the series geometry state (built from every slice received) keeps its neighbours.
    instance_id: Mapped[int | None] = mapped_column(
        ForeignKey("instances.id", ondelete="SET NULL"), index=True
    )
    frame_number: Mapped[int | None] = mapped_column(Integer)
    stack_key: Mapped[str] = mapped_column(String(255))
    position_um: Mapped[int] = mapped_column(BigInteger)


Index(
    "ix_instance_positions_stack",
    InstancePosition.series_id,
    InstancePosition.stack_key,
    InstancePosition.position_um,
)
Index("ix_series_study_modality", Series.study_id, Series.modality)


class ForwardJob(Base):
    """One instance to send to one destination (the outbox of ``scp.services.forwarding``).

    Created in the transaction that indexes the instance; ``state`` moves
    ``pending`` -> ``in_flight`` (claimed by ``claimed_by`` until ``lease_until``) ->
    ``done`` or back to ``pending`` (retry at ``next_attempt_at``) or ``dead``.
    """

    __tablename__ = "forward_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"))
    destination: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    #: Attempts the destination refused (a failure status); ``max_attempts`` counts these
    #: only, so a long outage (failures of reach) never uses them up.
    refusals: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    #: Last DIMSE status the destination answered (PS3.4 B.2.3), if any.
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    done_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: Destinations with ``storage_commitment``: ``requested`` (an N-ACTION carried it
    #: in ``commitment_transaction_uid``), ``committed`` or ``failed`` (its report said
    #: so); ``None`` before it was asked.
    commitment_state: Mapped[str | None] = mapped_column(String(16))
    commitment_transaction_uid: Mapped[str | None] = mapped_column(String(64))


Index(
    "ix_forward_jobs_claim",
    ForwardJob.destination,
    ForwardJob.state,
    ForwardJob.next_attempt_at,
)
Index("ix_forward_jobs_lease", ForwardJob.state, ForwardJob.lease_until)
Index("ix_forward_jobs_instance", ForwardJob.instance_id, ForwardJob.destination)


class ForwardDestination(Base):
    """Operator state of a forwarding destination (issue 19): ``paused`` destinations keep
    their queue, but their workers claim nothing until resumed. A destination without a
    row is running."""

    __tablename__ = "forward_destinations"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CommitmentRequest(Base):
    """A Storage Commitment request (N-ACTION, PS3.4 J.3.2) waiting for its report.

    Written before the N-ACTION-RSP goes out, so a request survives a restart; ``state``
    moves ``pending`` -> ``done`` (the N-EVENT-REPORT was answered) or ``dead`` (given up,
    ``last_error`` says why).  ``refs`` is the Referenced SOP Sequence as
    ``[[sop_class_uid, sop_instance_uid], ...]``.
    """

    __tablename__ = "commitment_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    transaction_uid: Mapped[str] = mapped_column(String(64))
    calling_ae_title: Mapped[str] = mapped_column(String(16))
    called_ae_title: Mapped[str] = mapped_column(String(16))
    refs: Mapped[list[list[str]]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    done_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


Index("ix_commitment_requests_due", CommitmentRequest.state, CommitmentRequest.next_attempt_at)


class ForwardNode(Base):
    """A process that claims forward jobs, with its heartbeat (``storage.claimants``).

    A job ``in_flight`` whose ``claimed_by`` names a node whose heartbeat is older than
    the claimant timeout belongs to a dead process and is taken over at once; a node
    that stops cleanly deletes its row.
    """

    __tablename__ = "forward_nodes"

    node_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class IngestJournal(Base):
    """How far the indexer has read one journal segment (:mod:`storage.journal`): the byte
    ``position`` after the last record it committed, written in the same transaction as
    that record's index rows, so a restart resumes exactly there."""

    __tablename__ = "ingest_journal"

    segment: Mapped[str] = mapped_column(String(255), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger)
    #: Success-to-committed time of the newest record of the last batch, in ms.
    lag_ms: Mapped[float | None] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Deletion(Base):
    """One deletion from the store (:mod:`storage.retention`), by policy or by hand: one row
    per series touched.  ``reason`` is the rule (``keep_days``, ``keep_flagged_days``,
    ``watermark``) or ``manual``; ``actor`` the policy or the person (``cli:USER``,
    ``http``); ``forced`` when undelivered instances went too.  ``sop_instance_uid`` is set
    when one instance was deleted by hand."""

    __tablename__ = "deletions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deleted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    level: Mapped[str] = mapped_column(String(16))
    study_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    sop_instance_uid: Mapped[str | None] = mapped_column(String(64))
    instances: Mapped[int] = mapped_column(Integer)
    bytes: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(128))
    forced: Mapped[bool] = mapped_column(Boolean, default=False)
    comment: Mapped[str | None] = mapped_column(String(1024))


class PendingUnlink(Base):
    """A file whose index row is deleted but which may still be on disk: written in the
    transaction that deletes the row, removed after the unlink, so a crash in between is
    finished by :func:`storage.retention.finish_pending` (never an orphan file).
    ``received_at`` is the deleted row's: a file rewritten since (a resend still in the
    ingest journal) is kept."""

    __tablename__ = "pending_unlinks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deletion_id: Mapped[int | None] = mapped_column(Integer, index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(255))
    original_path: Mapped[str | None] = mapped_column(String(255))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    marked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RetentionLock(Base):
    """The one row nodes sharing a database take in turn to run the retention pass
    (``holder`` until ``lease_until``); PostgreSQL uses an advisory lock as well."""

    __tablename__ = "retention_lock"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
