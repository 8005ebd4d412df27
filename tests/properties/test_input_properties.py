"""The checks of what people type, on generated input: bucket names, user ids, keys, file
names, metadata (consumer.names), durations (consumer.durations) and ``replay --since``.

Each check either returns a value that keeps its promise or raises InvalidInput (which
the CLI turns into one line and exit 2); no other exception escapes, whatever the text.
The failing examples these properties found are kept as explicit examples.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from consumer.durations import duration_or_none, parse_duration
from consumer.errors import InvalidInput
from consumer.events import user_id_for
from consumer.names import (
    MAX_FILE_NAME_BYTES,
    MAX_KEY_BYTES,
    check_bucket,
    check_key,
    check_metadata,
    check_user_id,
    decode_metadata_value,
    encode_metadata_value,
    import_key,
    parse_metadata_options,
    safe_file_name,
    upload_key,
    user_prefix,
)
from consumer.repair.replay import parse_since

# Any str Python can hold, lone surrogates included: a name read from a file system with
# bytes that are not UTF-8 arrives as surrogate escapes (PEP 383), and so does such a
# command-line argument.
any_text = st.text(st.characters(), max_size=80)
# Half of a UTF-16 surrogate pair as PEP 383 makes it of the byte 0xFF.
NOT_UTF8_NAME = "take\udcff.wav"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _checked(check: Callable[..., object], *args: object) -> object:
    """``check(*args)``, or None when it refused with InvalidInput (any other exception
    fails the property)."""
    refusal = ""
    try:
        return check(*args)
    except InvalidInput as exc:
        refusal = str(exc)
    assert refusal.strip(), "a refusal without a reason"
    assert "\n" not in refusal, "the refusal must be one line"
    return None


# --- buckets ------------------------------------------------------------------------------


def _bucket_rules_allow(name: str) -> bool:
    """S3's bucket naming rules, written out one by one."""
    return (
        3 <= len(name) <= 63
        and all(c in "abcdefghijklmnopqrstuvwxyz0123456789.-" for c in name)
        and name[0].isalnum()
        and name[-1].isalnum()
        and not any(pair in name for pair in ("..", ".-", "-."))
        and re.fullmatch(r"[0-9]{1,3}(\.[0-9]{1,3}){3}", name) is None
        and not name.startswith(("xn--", "sthree-", "amzn-s3-demo-"))
        and not name.endswith(("-s3alias", "--ol-s3", "--x-s3", ".mrap"))
    )


bucket_like = st.text(st.sampled_from("abcz09.-_A"), min_size=0, max_size=70)


@given(
    st.one_of(
        bucket_like, any_text, st.from_regex(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", fullmatch=True)
    )
)
@example("192.168.5.4")
@example("１２３")  # fullwidth digits: letters and digits for \d, not for S3
def test_a_bucket_name_is_accepted_exactly_when_s3_allows_it(name: str) -> None:
    assert (_checked(check_bucket, name) == name) is _bucket_rules_allow(name)


# --- user ids and keys ----------------------------------------------------------------------

user_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", fullmatch=True)


@given(st.one_of(user_ids, any_text))
def test_a_user_id_is_accepted_exactly_when_it_fits_a_key_prefix(user_id: str) -> None:
    accepted = _checked(check_user_id, user_id) == user_id
    assert accepted is (
        re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", user_id, re.ASCII) is not None
    )
    if accepted:
        # The owner is read back from the prefix of every key built for them.
        assert user_id_for(user_prefix(user_id) + "x.wav", {}) == user_id


@given(any_text)
@example("user_1/\udcff.wav")  # found: UnicodeEncodeError escaped
@example("a" * MAX_KEY_BYTES + "é")
def test_check_key_returns_the_key_or_refuses_it(key: str) -> None:
    checked = _checked(check_key, key)
    if checked is None:
        return
    assert checked == key
    assert 0 < len(key.encode("utf-8")) <= MAX_KEY_BYTES
    assert not key.startswith("/")
    assert _CONTROL.search(key) is None
    assert not {".", ".."} & set(key.split("/"))


@given(any_text)
@example(NOT_UTF8_NAME)  # found: UnicodeEncodeError escaped
@example("a." + "b" * 300)  # found: 302 bytes, over the 200 promised
@example("." + "é" * 150)
@example(".. /x/..")
def test_a_safe_file_name_keeps_its_promises(name: str) -> None:
    safe = safe_file_name(name)
    assert safe, "never empty"
    assert len(safe.encode("utf-8")) <= MAX_FILE_NAME_BYTES
    assert "/" not in safe
    assert "\\" not in safe
    assert _CONTROL.search(safe) is None
    assert not safe.startswith((".", " "))
    assert ".." not in safe
    assert safe_file_name(safe) == safe, "making a safe name safe changes nothing"


@given(user_ids, any_text, st.from_regex(r"[0-9a-f]{4,32}", fullmatch=True))
@example("7", NOT_UTF8_NAME, "abcd")
def test_an_upload_key_is_a_valid_key_of_its_user(user_id: str, name: str, unique: str) -> None:
    key = upload_key(user_id, name, now=NOW, unique=unique)
    assert check_key(key) == key
    assert user_id_for(key, {}) == user_id
    assert key.startswith(f"user_{user_id}/2026-03-01/{unique}-")


@given(user_ids, st.lists(any_text, min_size=1, max_size=4).map("/".join))
@example("7", "a/../" + NOT_UTF8_NAME)
def test_an_import_key_is_a_valid_key_of_its_user_or_the_path_has_no_name(
    user_id: str, path: str
) -> None:
    key = _checked(import_key, user_id, "0a1b2c3d", path)
    if key is None:
        assert not [p for p in path.replace("\\", "/").split("/") if p not in ("", ".", "..")]
        return
    assert isinstance(key, str)
    assert check_key(key) == key
    assert user_id_for(key, {}) == user_id


# --- metadata ---------------------------------------------------------------------------------

metadata_names = st.from_regex(r"[a-z0-9][a-z0-9-]{0,20}", fullmatch=True)


@given(any_text)
@example("\ud800")  # found: UnicodeEncodeError escaped
@example("100% ✓")
def test_a_metadata_value_is_encoded_to_printable_ascii_and_back(value: str) -> None:
    encoded = encode_metadata_value(value)
    assert re.fullmatch(r"[\x20-\x7e]*", encoded)
    assert check_metadata({"note": encoded}) == {"note": encoded}
    if re.search("[\ud800-\udfff]", value) is None:
        assert decode_metadata_value(encoded) == value


@given(metadata_names, st.text(st.characters(codec="utf-8"), max_size=60))
def test_meta_options_round_trip(name: str, value: str) -> None:
    parsed = parse_metadata_options([f"{name.upper()}={value}"])
    assert list(parsed) == [name]
    assert decode_metadata_value(parsed[name]) == value


@given(st.dictionaries(any_text, any_text, max_size=4))
def test_check_metadata_returns_metadata_or_refuses_it(metadata: dict[str, str]) -> None:
    _checked(check_metadata, metadata)


# --- durations ----------------------------------------------------------------------------------

UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@given(st.integers(0, 10**6), st.sampled_from(sorted(UNITS)), st.sampled_from(["", " "]))
def test_a_duration_means_its_number_of_units(number: int, unit: str, space: str) -> None:
    for text in (f"{number}{space}{unit}", f" {number}{space}{unit.upper()} "):
        assert parse_duration(text) == timedelta(seconds=number * UNITS[unit])


@given(any_text)
@example("9" * 30 + "d")  # found: OverflowError escaped
@example("٣m")  # Arabic-Indic digit three: not a duration a person types
def test_any_text_is_a_duration_or_refused(text: str) -> None:
    duration = _checked(parse_duration, text)
    if duration is not None:
        assert isinstance(duration, timedelta)
        assert duration >= timedelta(0)
        assert re.fullmatch(r"\s*[0-9]+\s*[smhdwSMHDW]?\s*", text)
    assert _checked(duration_or_none, text) == duration


@given(any_text)
@example("9" * 30 + "d")  # found: OverflowError escaped
@example("9999999w")  # found: a moment before year 1, OverflowError escaped
@example("0001-01-01T00:00+01:00")  # found: OverflowError escaped
@example("2026-03-01T12:00:00.000001")  # a microsecond after now
def test_since_is_a_moment_before_now_or_refused(text: str) -> None:
    moment = _checked(parse_since, text, NOW)
    if moment is not None:
        assert isinstance(moment, datetime)
        assert moment.tzinfo is UTC
        assert moment <= NOW


@given(st.datetimes(max_value=datetime(2026, 3, 1, 11, 0), timezones=st.sampled_from([UTC, None])))
def test_since_reads_an_iso_time_back_as_the_same_moment(moment: datetime) -> None:
    expected = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    assert parse_since(moment.isoformat(), NOW) == expected


def test_since_refuses_a_future_moment_by_name() -> None:
    with pytest.raises(InvalidInput, match="in the future"):
        parse_since((NOW + timedelta(seconds=1)).isoformat(), NOW)
