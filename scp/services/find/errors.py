"""The failure a C-FIND request ends with (PS3.4 C.4.1.1.4, Table C.4-1)."""

from __future__ import annotations

from pydicom.dataset import Dataset

#: Error Comment (0000,0902) is LO: 64 characters at most (PS3.7 C.4.2.1.4).
COMMENT_CHARS = 64


def quoted(prefix: str, value: str) -> str:
    """``prefix`` and ``value`` quoted, the value shortened with ``...`` so that the whole
    comment fits Error Comment's 64 characters (:data:`COMMENT_CHARS`)."""
    room = COMMENT_CHARS - len(prefix) - 2
    shown = value if len(value) <= room else value[: max(0, room - 3)] + "..."
    return f"{prefix}'{shown}'"


class FindError(Exception):
    """A request the node refuses: answered with one failure response, no identifier.

    ``code`` is the DIMSE status (:mod:`scp.status`: 0xA900, 0xA700, 0xC000...),
    ``comment`` the Error Comment, ``tag`` the Offending Element when one key is at fault.
    """

    def __init__(self, code: int, comment: str, tag: int | None = None) -> None:
        super().__init__(comment)
        self.code = code
        self.comment = comment
        self.tag = tag

    def status_dataset(self) -> Dataset:
        """The status of the final response: Status (0000,0900), Error Comment (0000,0902)
        and Offending Element (0000,0901) when known (PS3.7 C.4.2.1.4)."""
        rsp = Dataset()
        rsp.Status = self.code
        # Every comment is written to fit whole (quoted()); the cut is a last guard.
        rsp.ErrorComment = self.comment.replace("\\", "/")[:COMMENT_CHARS]
        if self.tag is not None:
            rsp.OffendingElement = [self.tag]
        return rsp
