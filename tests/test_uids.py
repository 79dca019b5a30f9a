"""UID to path mapping (issue 2 item 4), property-based."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage.uids import InvalidUID, check_uid, instance_relpath

component = st.integers(min_value=0, max_value=10**12).map(str)
valid_uid = (
    st.lists(component, min_size=1, max_size=12).map(".".join).filter(lambda u: len(u) <= 64)
)


@given(valid_uid, valid_uid, valid_uid)
def test_valid_uids_map_to_three_plain_components(a: str, b: str, c: str) -> None:
    rel = instance_relpath(a, b, c)
    assert rel.parts == (a, b, c + ".dcm")
    assert not rel.is_absolute()
    assert ".." not in rel.parts


@given(valid_uid)
def test_padding_is_stripped(uid: str) -> None:
    assert check_uid(uid + "\x00") == uid
    assert check_uid(uid + " ") == uid


@given(st.text(min_size=1, max_size=80))
def test_anything_accepted_is_path_safe(text: str) -> None:
    try:
        uid = check_uid(text)
    except InvalidUID:
        return
    assert len(uid) <= 64
    assert set(uid) <= set("0123456789.")
    assert Path(uid).name == uid and uid not in {".", ".."}


@pytest.mark.parametrize(
    "bad", ["", "1.2/3", "../1", "1..2", ".1", "1.", "1.2 3", "1.2.\u00e9", "1." + "2" * 64]
)
def test_bad_uids_are_refused(bad: str) -> None:
    with pytest.raises(InvalidUID):
        check_uid(bad)


def test_a_missing_uid_is_said_to_be_missing() -> None:
    """The Error Comment of an instance without Study Instance UID reads as DICOM, not as
    Python (it said ``StudyInstanceUID None is not a valid UID: empty``)."""
    from storage.uids import InvalidUID, check_uid

    for value in (None, "", " \x00"):
        with pytest.raises(InvalidUID) as caught:
            check_uid(value, "StudyInstanceUID")
        assert str(caught.value) == "StudyInstanceUID is missing or empty"
    with pytest.raises(InvalidUID, match=r"'1\.2\.a' is not a valid UID"):
        check_uid("1.2.a", "StudyInstanceUID")
