"""Every text validator matches the whole string (issue 16, kind 1).

One parametrized property suite over every validator the node has: a valid value with a
character added before or after it is refused unless PS3.5 6.2 lets that VR carry the
character as padding.  ``re.match(...$)`` would let ``'1.2.3\\n'`` pass as a UID; ``\\d``
or ``int()`` would let non-ASCII digits pass.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from pydicom.dataset import Dataset

from scp.api.params import SeriesQuery
from scp.config import ConfigError, integer, load_config, number
from scp.pipeline.ds import DSKind, classify_ds, parse_ds
from scp.pipeline.vr import ae_title_problem, is_da, is_finding_code, is_tm, parse_is
from scp.services.find.errors import FindError
from scp.services.find.identifier import parse_identifier
from storage.queries import parse_limit
from storage.uids import InvalidUID, check_uid

#: Characters that must never pass at either end unless the VR allows them as padding.
JUNK = ["\n", "\r", "\t", "\x0b", "\x0c", "\x00", " ", "\u0661", "\uff11", "\u00a0"]


def _raises(fn: Callable[[str], object], *errors: type[BaseException]) -> Callable[[str], bool]:
    def accept(text: str) -> bool:
        try:
            fn(text)
        except errors:
            return False
        return True

    return accept


def _cfind(keyword: str) -> Callable[[str], bool]:
    """A C-FIND identifier with ``keyword`` = text is accepted (PS3.4 C.4.1.1.3.1)."""

    def parse(text: str) -> None:
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        with warnings.catch_warnings():  # pydicom warns about the invalid values we test
            warnings.simplefilter("ignore", UserWarning)
            setattr(ds, keyword, text)
        parse_identifier(ds)

    return _raises(parse, FindError)


def _config_int(text: str) -> None:
    load_config(environ={"SPACING_SCP_NODE_MAX_ASSOCIATIONS": text})


def _config_float(text: str) -> None:
    load_config(environ={"SPACING_SCP_NODE_ACSE_TIMEOUT": text})


@dataclass(frozen=True)
class Validator:
    name: str
    accept: Callable[[str], bool]
    valid: st.SearchStrategy[str]
    #: padding PS3.5 6.2 (or the node's reading of it) allows: (leading, trailing)
    padding: tuple[str, str] = ("", "")


_UID = st.from_regex(re.compile(r"[1-9][0-9]{0,4}(\.[1-9][0-9]{0,4}){0,6}"), fullmatch=True)
_DS = st.from_regex(re.compile(r"[+-]?[0-9]{1,5}(\.[0-9]{1,4})?"), fullmatch=True)
_IS = st.from_regex(re.compile(r"[+-]?[0-9]{1,9}"), fullmatch=True)
_AE = st.from_regex(re.compile(r"[A-Z][A-Z0-9_]{0,14}"), fullmatch=True)
_DA = st.dates().map(lambda d: d.strftime("%Y%m%d")).filter(lambda s: len(s) == 8)
_TM = st.times().map(lambda t: t.strftime("%H%M%S"))
_CODE = st.from_regex(re.compile(r"[A-Z][A-Z0-9_]{0,30}"), fullmatch=True)

VALIDATORS = [
    Validator("UI check_uid", _raises(check_uid, InvalidUID), _UID, (" \x00", " \x00")),
    Validator("DS parse_ds", lambda s: parse_ds(s) is not None, _DS, (" ", " ")),
    Validator("DS classify_ds", lambda s: classify_ds(s) is DSKind.CLEAN, _DS, (" ", " ")),
    Validator("IS parse_is", lambda s: parse_is(s) is not None, _IS, (" ", " ")),
    Validator("AE ae_title_problem", lambda s: ae_title_problem(s) is None, _AE, (" ", " ")),
    Validator("DA is_da", is_da, _DA),
    Validator("TM is_tm", is_tm, _TM),
    Validator("finding code", is_finding_code, _CODE),
    Validator(
        "HTTP GET /series?code=",
        _raises(lambda s: SeriesQuery(code=s), ValidationError),
        _CODE,
    ),
    Validator(
        "limit parse_limit",
        _raises(parse_limit, ValueError),
        st.from_regex(re.compile(r"[1-9][0-9]{0,2}"), fullmatch=True),
    ),
    Validator("option/variable integer", _raises(integer, ValueError), _IS, (" ", " ")),
    Validator("option/variable number", _raises(number, ValueError), _DS, (" ", " ")),
    # C-FIND values lose their padding first (PS3.5 6.2: trailing NUL or space).
    Validator("C-FIND StudyDate", _cfind("StudyDate"), _DA, (" \x00", " \x00")),
    Validator("C-FIND StudyTime", _cfind("StudyTime"), _TM, (" \x00", " \x00")),
    Validator(
        "config integer",
        _raises(_config_int, ConfigError),
        _IS.filter(lambda s: int(s) >= 1),
        (" ", " "),
    ),
    Validator(
        "config number",
        _raises(_config_float, ConfigError),
        _DS.filter(lambda s: float(s) > 0),
        (" ", " "),
    ),
]


@pytest.mark.parametrize("validator", VALIDATORS, ids=lambda v: v.name)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_whole_string_only(validator: Validator, data: st.DataObject) -> None:
    value = data.draw(validator.valid, label="valid")
    assert validator.accept(value), value
    junk = data.draw(st.sampled_from(JUNK), label="junk")
    leading, trailing = validator.padding
    assert validator.accept(junk + value) == (junk in leading), repr(junk + value)
    assert validator.accept(value + junk) == (junk in trailing), repr(value + junk)


@pytest.mark.parametrize("validator", VALIDATORS, ids=lambda v: v.name)
@pytest.mark.parametrize("text", ["\n", "1\n2", "١٢", "1\x002", "x\ty", "1\\2"])
def test_garbage_is_refused(validator: Validator, text: str) -> None:
    assert not validator.accept(text)


def test_the_issue_examples() -> None:
    with pytest.raises(InvalidUID):
        check_uid("1.2.3\n")
    assert classify_ds("0.5\n") is DSKind.INVALID
    assert parse_is("\u0661\u0662") is None and parse_is("1_000") is None
    assert parse_is("2147483648") is None and parse_is(" -2147483648") == -(2**31)
