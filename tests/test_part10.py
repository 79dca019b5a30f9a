"""storage.part10.file_meta_bytes: the File Meta Information the node writes (PS3.10 7.1)."""

from __future__ import annotations

from io import BytesIO

from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID

from storage.part10 import _clean_ae, file_meta_bytes

uids = st.from_regex(r"\A[1-9][0-9]{0,5}(\.(0|[1-9][0-9]{0,8})){1,8}\Z").filter(
    lambda u: len(u) <= 64
)
ae_titles = st.text(max_size=20)


def _reference(**kw: str) -> bytes:
    """The same elements encoded by pydicom."""
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = UID(kw["sop_class_uid"])
    meta.MediaStorageSOPInstanceUID = UID(kw["sop_instance_uid"])
    meta.TransferSyntaxUID = UID(kw["transfer_syntax_uid"])
    meta.ImplementationClassUID = UID(kw["implementation_class_uid"])
    meta.ImplementationVersionName = kw["implementation_version_name"]
    if _clean_ae(kw["source_ae_title"]):
        meta.SourceApplicationEntityTitle = _clean_ae(kw["source_ae_title"])
        meta.SendingApplicationEntityTitle = _clean_ae(kw["source_ae_title"])
    if _clean_ae(kw["receiving_ae_title"]):
        meta.ReceivingApplicationEntityTitle = _clean_ae(kw["receiving_ae_title"])
    out = BytesIO()
    write_file_meta_info(out, meta, enforce_standard=True)  # type: ignore[arg-type]
    return out.getvalue()


@settings(max_examples=200, deadline=None)
@given(
    sop_class=uids,
    sop_instance=uids,
    ts=st.sampled_from(["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.50"]),
    source=ae_titles,
    receiving=ae_titles,
    version=st.from_regex(r"\A[A-Z0-9_]{1,16}\Z"),
)
def test_file_meta_bytes_equal_pydicom_encoding(
    sop_class: str, sop_instance: str, ts: str, source: str, receiving: str, version: str
) -> None:
    kw = dict(
        sop_class_uid=sop_class,
        sop_instance_uid=sop_instance,
        transfer_syntax_uid=ts,
        source_ae_title=source,
        receiving_ae_title=receiving,
        implementation_class_uid="1.2.826.0.1.3680043.8.498.90210.1",
        implementation_version_name=version,
    )
    encoded = file_meta_bytes(**kw)
    assert encoded == _reference(**kw)
    assert len(encoded) % 2 == 0
    meta = dcmread(BytesIO(b"\x00" * 128 + b"DICM" + encoded)).file_meta
    assert meta.MediaStorageSOPInstanceUID == sop_instance
    assert meta.TransferSyntaxUID == ts
    assert meta.FileMetaInformationGroupLength == len(encoded) - 12
