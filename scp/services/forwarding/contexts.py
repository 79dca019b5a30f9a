"""Presentation contexts for forwarding (PS3.8 9.3.2.2, 9.3.3.2).

For every SOP class of a batch, one context per stored transfer syntax holding exactly
that syntax, and one fallback context offering Explicit VR Little Endian and Implicit VR
Little Endian. An instance goes out in the transfer syntax it is stored in; only between
the uncompressed little-endian syntaxes (explicit, implicit, deflated) is it re-encoded,
when the destination accepted no context with the stored syntax. A compressed instance
is never transcoded.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pydicom import uid as pyuid

from scp.services.forwarding.sender import AcceptedContext, ContextProposal, StoreAssociation
from storage import outbox

#: Transfer syntaxes an instance may be re-encoded between (no pixel data change).
NATIVE_LITTLE_ENDIAN: frozenset[str] = frozenset(
    {
        pyuid.ExplicitVRLittleEndian,
        pyuid.ImplicitVRLittleEndian,
        pyuid.DeflatedExplicitVRLittleEndian,
    }
)
FALLBACK_TRANSFER_SYNTAXES: tuple[str, ...] = (
    pyuid.ExplicitVRLittleEndian,
    pyuid.ImplicitVRLittleEndian,
)
#: Presentation context IDs are odd numbers 1-255 (PS3.8 9.3.2.2).
MAX_CONTEXTS = 128

#: PS3.8 9.3.3.2 presentation context results.
_CX_RESULTS = {
    0x01: "user rejection",
    0x02: "no reason",
    0x03: "abstract syntax not supported",
    0x04: "transfer syntaxes not supported",
}


def _uid_name(value: str) -> str:
    name = pyuid.UID(value).name
    return name if name and name != value else value


def _context_keys(jobs: Iterable[outbox.ClaimedJob]) -> list[tuple[str, tuple[str, ...]]]:
    keys: dict[tuple[str, tuple[str, ...]], None] = {}
    for job in jobs:
        keys[(job.sop_class_uid, (job.transfer_syntax_uid,))] = None
        keys[(job.sop_class_uid, FALLBACK_TRANSFER_SYNTAXES)] = None
    return list(keys)


def split_batch(jobs: Sequence[outbox.ClaimedJob]) -> list[list[outbox.ClaimedJob]]:
    """Groups of jobs whose presentation contexts fit one association (at most 128)."""
    groups: list[list[outbox.ClaimedJob]] = []
    current: list[outbox.ClaimedJob] = []
    for job in jobs:
        if current and len(_context_keys([*current, job])) > MAX_CONTEXTS:
            groups.append(current)
            current = []
        current.append(job)
    if current:
        groups.append(current)
    return groups


def contexts_for(jobs: Sequence[outbox.ClaimedJob]) -> list[ContextProposal]:
    """Exact contexts first (one transfer syntax each), then the uncompressed fallbacks."""
    keys = _context_keys(jobs)
    exact = [k for k in keys if k[1] != FALLBACK_TRANSFER_SYNTAXES]
    fallback = [k for k in keys if k[1] == FALLBACK_TRANSFER_SYNTAXES]
    return [ContextProposal(sop, ts) for sop, ts in exact + fallback]


def pick_context(
    assoc: StoreAssociation, job: outbox.ClaimedJob
) -> tuple[str, AcceptedContext | None]:
    """``("file", cx)``: send the stored bytes; ``("convert", cx)``: re-encode natively;
    ``(reason, None)``: the instance cannot go over this association."""
    accepted = [cx for cx in assoc.accepted_contexts if cx.abstract_syntax == job.sop_class_uid]
    for cx in accepted:
        if cx.transfer_syntax == job.transfer_syntax_uid:
            return "file", cx
    if job.transfer_syntax_uid in NATIVE_LITTLE_ENDIAN:
        for cx in accepted:
            if cx.transfer_syntax in NATIVE_LITTLE_ENDIAN:
                return "convert", cx
    sop, ts = _uid_name(job.sop_class_uid), _uid_name(job.transfer_syntax_uid)
    if accepted:
        offered = ", ".join(_uid_name(cx.transfer_syntax) for cx in accepted)
        return (
            f"no presentation context: the destination accepted {sop} only in {offered}, "
            f"the instance is stored in {ts} and the node does not transcode",
            None,
        )
    results = sorted(
        {
            _CX_RESULTS.get(cx.result, f"result {cx.result}")
            for cx in assoc.rejected_contexts
            if cx.abstract_syntax == job.sop_class_uid
        }
    )
    why = f" ({', '.join(results)}, PS3.8 9.3.3.2)" if results else ""
    return (
        f"no presentation context: the destination rejected {sop} (stored in {ts}, "
        f"offered with the uncompressed fallbacks too){why}",
        None,
    )
