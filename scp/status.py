"""DIMSE status codes the node answers with (PS3.4 Annex B.2.3, PS3.7 C.4.2)."""

from __future__ import annotations

from typing import Final

SUCCESS: Final = 0x0000

# Warnings (PS3.4 B.2.3): the instance was stored.
WARNING_COERCION_OF_DATA_ELEMENTS: Final = 0xB000
WARNING_ELEMENTS_DISCARDED: Final = 0xB006
WARNING_DATASET_DOES_NOT_MATCH_SOP_CLASS: Final = 0xB007

# Failures (PS3.4 B.2.3): nothing was stored.
REFUSED_OUT_OF_RESOURCES: Final = 0xA700
ERROR_DATASET_DOES_NOT_MATCH_SOP_CLASS: Final = 0xA900
#: Cannot understand (0xCxxx family): the data set could not be parsed.
ERROR_CANNOT_UNDERSTAND: Final = 0xC210
#: Cannot understand: an identifying UID breaks the UI grammar (PS3.5 9.1).
ERROR_CANNOT_UNDERSTAND_UID: Final = 0xC211
#: Cannot understand: the instance exceeds the configured maximum size.
ERROR_CANNOT_UNDERSTAND_TOO_LARGE: Final = 0xC212
#: Processing failure (PS3.7 C.4.2): the node failed to store or index.
PROCESSING_FAILURE: Final = 0x0110

# C-FIND (PS3.4 C.4.1.1.4, Table C.4-1): the Query/Retrieve SCP (scp.services.find).
#: Pending: a match is supplied, all keys were supported.
FIND_PENDING: Final = 0xFF00
#: Pending with a warning: one or more Optional Keys were not supported for existence
#: and/or matching for this identifier.
FIND_PENDING_WARNING_OPTIONAL_KEYS: Final = 0xFF01
#: Matching terminated due to a C-CANCEL request.
FIND_CANCEL: Final = 0xFE00
#: Refused: Out of Resources (the node answers it past ``[query] max_results`` matches).
FIND_REFUSED_OUT_OF_RESOURCES: Final = 0xA700
#: Identifier does not match SOP Class (no/unknown Query/Retrieve Level, a missing unique
#: key of a higher level, a value its key cannot match).
FIND_ERROR_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS: Final = 0xA900
#: Unable to process (0xCxxx family): undecodable identifier, index error.
FIND_ERROR_UNABLE_TO_PROCESS: Final = 0xC000

# C-MOVE / C-GET (PS3.4 C.4.2.1.5, C.4.3.1.4): the Retrieve SCP (scp.services.retrieve).
#: Refused: Out of Resources - Unable to calculate number of matches (over 65535).
RETRIEVE_REFUSED_TOO_MANY_MATCHES: Final = 0xA701
#: Refused: Out of Resources - Unable to perform sub-operations.
RETRIEVE_REFUSED_SUBOPERATIONS: Final = 0xA702
#: Refused: Move Destination unknown (not in ``[[move_destinations]]``).
RETRIEVE_REFUSED_MOVE_DESTINATION_UNKNOWN: Final = 0xA801

# Storage Commitment (PS3.4 J.3, PS3.7 C.5): N-ACTION statuses and Failure Reasons.
#: Refused: Not authorized (the requester is not in ``[[commitment_peers]]``).
COMMITMENT_REFUSED_NOT_AUTHORIZED: Final = 0x0124
#: Missing attribute (Transaction UID, Referenced SOP Sequence).
COMMITMENT_MISSING_ATTRIBUTE: Final = 0x0120
#: Invalid attribute value (a UID that breaks the UI grammar).
COMMITMENT_INVALID_ATTRIBUTE_VALUE: Final = 0x0106
#: No such action (Action Type ID other than 1).
COMMITMENT_NO_SUCH_ACTION: Final = 0x0123
#: No such SOP Class (an N-ACTION for another SOP class).
COMMITMENT_NO_SUCH_SOP_CLASS: Final = 0x0118
#: Failure Reason: no such object instance (never stored here).
COMMITMENT_NO_SUCH_OBJECT_INSTANCE: Final = 0x0112
#: Failure Reason: class/instance conflict (stored with another SOP Class UID).
COMMITMENT_CLASS_INSTANCE_CONFLICT: Final = 0x0119

SUCCESS_STATUSES: Final = frozenset({SUCCESS})
WARNING_STATUSES: Final = frozenset(
    {
        WARNING_COERCION_OF_DATA_ELEMENTS,
        WARNING_ELEMENTS_DISCARDED,
        WARNING_DATASET_DOES_NOT_MATCH_SOP_CLASS,
    }
)


def is_stored(status: int) -> bool:
    """True for statuses that mean the instance is stored (success or warning)."""
    return status in SUCCESS_STATUSES or status in WARNING_STATUSES


def error_comment(what: str, exc: BaseException) -> str:
    """A short cause for an Error Comment (0000,0902): ``what: Type: first line of the
    message``, printable ASCII without backslash (LO, PS3.5 6.2), at most 64 characters.
    Paths and SQL beyond the first line stay in the log; a database driver's error
    (SQLAlchemy's ``orig``) is named rather than its wrapper."""
    orig = getattr(exc, "orig", None)
    if isinstance(orig, BaseException):
        exc = orig
    if isinstance(exc, OSError) and exc.strerror:
        detail = exc.strerror  # not the path: the data directory's layout stays in the log
    else:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = f"{what}: {type(exc).__name__}" + (f": {detail}" if detail else "")
    text = "".join(c if " " <= c <= "~" and c != "\\" else "?" for c in text)
    return text[:64]  # Error Comment (0000,0902) is LO (PS3.7 C.4.2.1.4, PS3.5 6.2)


def describe(status: int) -> str:
    """A short human-readable name for a status code."""
    return _NAMES.get(status, f"0x{status:04X}")


_NAMES: Final = {
    SUCCESS: "Success",
    WARNING_COERCION_OF_DATA_ELEMENTS: "Warning: coercion of data elements",
    WARNING_ELEMENTS_DISCARDED: "Warning: elements discarded",
    WARNING_DATASET_DOES_NOT_MATCH_SOP_CLASS: "Warning: data set does not match SOP class",
    REFUSED_OUT_OF_RESOURCES: "Refused: out of resources",
    ERROR_DATASET_DOES_NOT_MATCH_SOP_CLASS: "Error: data set does not match SOP class",
    ERROR_CANNOT_UNDERSTAND: "Error: cannot understand",
    ERROR_CANNOT_UNDERSTAND_UID: "Error: cannot understand (invalid UID)",
    ERROR_CANNOT_UNDERSTAND_TOO_LARGE: "Error: cannot understand (instance too large)",
    PROCESSING_FAILURE: "Failure: processing failure",
}
