"""Encode an edited header so it can replace the received one in a stored file.

A stored file is rewritten as preamble + new File Meta Information + the
header returned by :func:`encode_header` + the received bytes from the pixel
data element's tag onwards (PS3.10 7.1, PS3.5 7.1).  The header is every
data element of groups above 0002 that precedes the pixel data, encoded in
the data set transfer syntax (PS3.5 Annex A): Implicit VR Little Endian,
Explicit VR Little Endian, Explicit VR Big Endian (retired), and every
encapsulated (compressed) transfer syntax, whose data set is Explicit VR
Little Endian (PS3.5 A.4), and Deflated Explicit VR Little Endian (PS3.5 A.5), whose
data set is Explicit VR Little Endian once inflated: the header is returned inflated and
:func:`storage.part10.write_part10` deflates it with the rest of the data set, streaming.
:class:`UnsupportedRewrite` is raised for unknown (private) transfer syntaxes whose
encoding the node cannot know.

Byte preservation: pydicom writes a :class:`~pydicom.dataelem.RawDataElement`
(an element never decoded) with its received value bytes when the data set's
original encoding is the one written, so every element the pipeline did not
decode comes out unchanged (implicit VR ones included: their VR was never
needed).  Elements pydicom decoded are encoded again from their values, which
may differ from the received bytes in padding or VR (a multi-valued string's
inner padding is dropped; a UN element of a VR pydicom knows is written with
that VR); to keep those unchanged as well, decode values from a copy
(``view = header[0x00030000:]``: a slice shares the raw elements but decodes
into its own dictionary) and edit the header itself.  Retired group length
elements (gggg,0000) of groups above 0002 (PS3.5 7.2) are not written: they
would be wrong after an edit.

The bytes after the header are copied as received, so ``transfer_syntax_uid``
must be the transfer syntax the data set was received in.  A data set read
leniently whose elements are encoded differently from what its transfer
syntax says (e.g. implicit VR under an explicit VR transfer syntax: pydicom
switches and warns) raises :class:`EncodingMismatch`, because its pixel data
is encoded that way too.
"""

from __future__ import annotations

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.tag import BaseTag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

#: (7FE0,0008) Float Pixel Data, (7FE0,0009) Double Float Pixel Data, (7FE0,0010) Pixel Data.
PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
_DICOM_TS_ROOT = "1.2.840.10008.1.2."


class UnsupportedRewrite(Exception):
    """The header of this instance cannot be re-encoded in place (store it unmodified)."""


class EncodingMismatch(UnsupportedRewrite):
    """The data set is not encoded as its transfer syntax says (PS3.5 10)."""

    def __init__(self, message: str, actual: tuple[bool, bool]) -> None:
        super().__init__(message)
        #: ``(is_implicit_vr, is_little_endian)`` of the received elements.
        self.actual = actual


def _describe(encoding: tuple[bool, bool]) -> str:
    implicit, little = encoding
    return f"{'implicit' if implicit else 'explicit'} VR {'little' if little else 'big'} endian"


def transfer_syntax_encoding(transfer_syntax_uid: str) -> tuple[bool, bool]:
    """``(is_implicit_vr, is_little_endian)`` of the data set in a transfer syntax.

    Deflated Explicit VR Little Endian: explicit VR little endian (the inflated data set,
    PS3.5 A.5). Raises :class:`UnsupportedRewrite` for transfer syntaxes pydicom does not
    know, and for a deflated one other than Deflated Explicit VR Little Endian.
    """
    ts = UID(str(transfer_syntax_uid).strip("\x00 "))
    if ts == DeflatedExplicitVRLittleEndian:
        return False, True
    if ts.is_transfer_syntax and ts.is_deflated:
        raise UnsupportedRewrite(
            f"transfer syntax {ts} deflates its data in a way the node does not rewrite"
        )
    if ts.is_transfer_syntax:
        return bool(ts.is_implicit_VR), bool(ts.is_little_endian)
    if ts.startswith(_DICOM_TS_ROOT):
        # A standard transfer syntax newer than pydicom: every one defined after
        # the native and deflated ones is encapsulated, Explicit VR Little Endian
        # for the data set (PS3.5 A.4).
        return False, True
    raise UnsupportedRewrite(f"unknown transfer syntax {ts!r}: its encoding is not known")


def received_encoding(ds: Dataset) -> tuple[bool, bool] | None:
    """How the undecoded top-level elements of ``ds`` are actually encoded.

    ``None`` when no raw element is left.  Differs from
    ``ds.original_encoding`` when pydicom switched VR mode while reading.
    """
    for elem in ds.elements():
        if isinstance(elem, RawDataElement):
            return bool(elem.is_implicit_VR), bool(elem.is_little_endian)
    return None


def header_view(ds: Dataset) -> Dataset:
    """The elements :func:`encode_header` writes, without decoding any of them.

    Groups above 0002, no group length (gggg,0000) (PS3.5 7.2), nothing
    from the first pixel data element on (it and what follows are copied
    from the received file).
    """
    tags = sorted(ds.keys())
    end = next((t for t in tags if t in PIXEL_TAGS), None)
    keep: dict[BaseTag, DataElement | RawDataElement] = {}
    for tag in tags:
        if end is not None and tag >= end:
            break
        if tag.group > 0x0002 and tag.element != 0x0000:
            keep[tag] = ds.get_item(tag)
    view = Dataset(keep)
    implicit, little = ds.original_encoding
    view.set_original_encoding(implicit, little, ds.original_character_set)
    return view


def encode_header(ds: Dataset, transfer_syntax_uid: str) -> bytes:
    """Encode the header of ``ds`` (see :func:`header_view`) in ``transfer_syntax_uid``.

    Raises :class:`UnsupportedRewrite` (deflated or unknown transfer syntax,
    :class:`EncodingMismatch`, or an element pydicom cannot encode).
    """
    target = transfer_syntax_encoding(transfer_syntax_uid)
    actual = received_encoding(ds)
    if actual is not None and actual != target and ds.original_encoding == target:
        raise EncodingMismatch(
            f"the data set is encoded as {_describe(actual)} although its transfer syntax "
            f"{transfer_syntax_uid} says {_describe(target)}; its pixel data is too, so the "
            "header cannot be replaced alone",
            actual,
        )
    view = header_view(ds)
    fp = DicomBytesIO()
    fp.is_implicit_VR, fp.is_little_endian = target
    try:
        # Raw elements are decoded only when the encoding changes; pydicom's
        # validation settings are process-wide and are left alone (a value it
        # refuses under strict reading then raises UnsupportedRewrite).
        write_dataset(fp, view)
    except (ValueError, TypeError, NotImplementedError, OverflowError, KeyError) as exc:
        raise UnsupportedRewrite(f"the header cannot be encoded: {exc}") from exc
    return bytes(fp.getvalue())
