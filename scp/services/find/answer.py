"""Turn a matched entity into a pending response's identifier (PS3.4 C.4.1.1.3.2).

The identifier holds Query/Retrieve Level (0008,0052), every supported key of the request
with the entity's value (zero length when unknown), and Specific Character Set
(0008,0005) when asked for or needed (``ISO_IR 192`` when a value is not ASCII).  Keys the
node does not support are left out (the pending responses then carry 0xFF01,
PS3.4 C.4.1.1.4).

pydicom only: the values are read from a :class:`~scp.services.find.hits.Hit`.
"""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset

from scp.pipeline.vr import parse_is
from scp.services.find.hits import Hit
from scp.services.find.identifier import FindRequest
from scp.services.find.keys import QUERY_RETRIEVE_LEVEL, SPECIFIC_CHARACTER_SET

#: Specific Character Set of a response with a value that is not ASCII (PS3.3 C.12.1.1.2).
UTF8 = "ISO_IR 192"


def response_identifier(request: FindRequest, hit: Hit) -> Dataset:
    """A pending response's identifier (PS3.4 C.4.1.1.3.2): the requested keys only."""
    ds = Dataset()
    ds.add_new(QUERY_RETRIEVE_LEVEL, "CS", request.level)
    ascii_only = True
    for key in request.returns:
        value = _element_value(key.vr, hit.value(key))
        ascii_only = ascii_only and _is_ascii(value)
        ds.add_new(key.tag, key.vr, value)
    if not ascii_only:
        ds.add_new(SPECIFIC_CHARACTER_SET, "CS", UTF8)
    elif request.charset_requested:
        ds.add_new(SPECIFIC_CHARACTER_SET, "CS", request.charset)
    return ds


def _element_value(vr: str, value: Any) -> Any:
    """An index value in the form pydicom encodes for ``vr``; ``None`` is zero length."""
    if value is None or value == "":
        return None
    if vr in ("IS", "US"):
        number = parse_is(str(value))
        if number is None:
            return None
        return str(number) if vr == "IS" else number
    if isinstance(value, list):
        return value
    return str(value) if vr != "DS" else value


def _is_ascii(value: Any) -> bool:
    """Every text of ``value`` (a string or a list of them) is ASCII; numbers are."""
    if isinstance(value, str):
        return value.isascii()
    if isinstance(value, list):
        return all(_is_ascii(v) for v in value)
    return True
