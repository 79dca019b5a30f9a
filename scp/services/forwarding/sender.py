"""What forwarding needs from the network: a Storage SCU's associations (PS3.4 B.2).

The worker (:mod:`scp.services.forwarding.worker`) talks only to these protocols;
:class:`scp.net.scu.StorageSCU` implements them with pynetdicom, and the composition
root (:mod:`scp.node`) hands its class to :class:`~scp.services.forwarding.Forwarder` as
the :data:`OpenerFactory`. A worker opens one association per batch with the
presentation contexts the batch needs, sends each stored instance file with C-STORE,
reads the response status, and releases; when the node stops, another thread aborts the
association in progress.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class AssociationSettings:
    """Where and how to associate with one destination (A-ASSOCIATE-RQ, PS3.8 9.3.2).

    Timeouts in seconds: TCP connect, ACSE (association negotiation and release),
    DIMSE (each C-STORE response), network (idle connection). ``max_pdu``: the largest
    P-DATA-TF PDU the node receives, in bytes (0: unlimited).
    """

    host: str
    port: int
    called_ae_title: str
    calling_ae_title: str
    connect_timeout_s: float
    acse_timeout_s: float
    dimse_timeout_s: float
    network_timeout_s: float
    max_pdu: int


@dataclass(frozen=True)
class ContextProposal:
    """A presentation context to propose (PS3.8 9.3.2.2): the abstract syntax (a SOP
    Class UID) and the transfer syntax UIDs offered for it, in order of preference."""

    abstract_syntax: str
    transfer_syntax: tuple[str, ...]


@dataclass(frozen=True)
class AcceptedContext:
    """A proposed context the destination accepted (PS3.8 9.3.3.2, result 0), with the
    one transfer syntax UID it chose."""

    abstract_syntax: str
    transfer_syntax: str


@dataclass(frozen=True)
class RejectedContext:
    """A proposed context the destination rejected, with its result (PS3.8 9.3.3.2:
    1 user-rejection, 2 no-reason, 3 abstract-syntax-not-supported,
    4 transfer-syntaxes-not-supported)."""

    abstract_syntax: str
    result: int


@dataclass(frozen=True)
class StoreResponse:
    """The C-STORE-RSP (PS3.7 9.3.1.2): Status (0000,0900), ``None`` when no response came
    (DIMSE timeout, A-ABORT), and Error Comment (0000,0902), ``""`` when absent (with no
    response: why, when the sender knows, e.g. a TLS or connection error of STOW-RS)."""

    status: int | None
    error_comment: str = ""


class StoreAssociation(Protocol):
    """One association with a destination, the node as Storage SCU."""

    @property
    def is_established(self) -> bool:
        """Whether C-STOREs can go over it (false once released, aborted or never up)."""
        ...

    @property
    def accepted_contexts(self) -> Sequence[AcceptedContext]: ...

    @property
    def rejected_contexts(self) -> Sequence[RejectedContext]: ...

    @property
    def failure(self) -> str:
        """Why it was not established, in words, for the job's error (empty when it was)."""
        ...

    def send_c_store(self, path: Path, *, reencode: bool) -> StoreResponse:
        """C-STORE the instance in the Part 10 file ``path`` (PS3.7 9.1.1) and wait for its
        response (at most the DIMSE timeout).

        ``reencode=False``: the data set bytes go out as stored, on an accepted context
        with the file's transfer syntax. ``reencode=True``: the data set is decoded and
        re-encoded in the accepted context's uncompressed little-endian transfer syntax.
        Raises (any ``Exception``: the worker counts a failed attempt) for an unreadable
        file, one without its SOP identity, no accepted context that fits, or an
        association that is gone.
        """
        ...

    def release(self) -> None:
        """A-RELEASE (PS3.8 7.2)."""
        ...


class AssociationOpener(Protocol):
    """A destination's Storage SCU: opens its associations, one at a time."""

    def open(self, contexts: Sequence[ContextProposal]) -> StoreAssociation:
        """Request an association proposing ``contexts`` (at most 128). Never raises for
        network failures: the result is then not established and says why."""
        ...

    def abort(self) -> bool:
        """From another thread: A-ABORT the association being negotiated or used (a
        C-STORE waiting for its response returns at once, with no status); ``True`` if
        there was one."""
        ...


#: Makes the opener of one destination (:class:`scp.net.scu.StorageSCU`).
OpenerFactory = Callable[[AssociationSettings], AssociationOpener]


@dataclass(frozen=True)
class StowSettings:
    """Where and how to send to a ``type = "stow-rs"`` destination (PS3.18 10.5).

    ``url``: the archive's DICOMweb root (requests go to ``{url}/studies``); ``token``: a
    bearer token, or ``username``/``password`` for basic auth; ``verify_tls``/``ca_file``:
    server certificate checking (``ca_file`` empty: the system's CAs). Timeouts in
    seconds: TCP connect, and the response to each request.
    """

    url: str
    token: str
    username: str
    password: str
    verify_tls: bool
    ca_file: str
    connect_timeout_s: float
    response_timeout_s: float
    user_agent: str


#: Makes the opener of one STOW-RS destination (:class:`scp.net.stow_rs.StowRsSender`):
#: its "associations" are HTTP connections, each instance one STOW-RS request whose
#: response maps to the status a C-STORE would have had.
StowOpenerFactory = Callable[[StowSettings], AssociationOpener]
