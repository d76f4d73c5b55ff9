"""Tests for booking.ids: GB 11643-1999 resident IDs, other documents, masking and hashing."""

from __future__ import annotations

import hmac
import pickle
import re
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from booking.ids import (
    RESIDENT_ID_CHECK,
    RESIDENT_ID_WEIGHTS,
    IdHasher,
    IdType,
    InvalidIdNumber,
    make_resident_id,
    mask_id_number,
    normalize_id_number,
    resident_id_check_character,
)

# The worked example published with GB 11643-1999 (Beijing Chaoyang, born 1949-12-31).
PUBLISHED_EXAMPLE = "11010519491231002X"
TODAY = date(2024, 6, 1)


def with_check(first17: str) -> str:
    """Append the correct check character so a test isolates exactly one other rule."""
    return first17 + resident_id_check_character(first17)


def rule_of(id_type: IdType, raw: str, today: date = TODAY) -> str:
    with pytest.raises(InvalidIdNumber) as excinfo:
        normalize_id_number(id_type, raw, today=today)
    return excinfo.value.rule


# --- constants and check character ---------------------------------------------------------


def test_weights_are_powers_of_two_mod_11() -> None:
    assert tuple(2 ** (17 - i) % 11 for i in range(17)) == RESIDENT_ID_WEIGHTS


def test_check_table_is_mod_11_2() -> None:
    assert RESIDENT_ID_CHECK == "10X98765432"


def test_check_character_of_published_example_is_x() -> None:
    assert resident_id_check_character("11010519491231002") == "X"


def test_check_character_all_zeros_is_1() -> None:
    assert resident_id_check_character("0" * 17) == "1"


@pytest.mark.parametrize("first17", ["1101051949123100", "110105194912310021", "1101051949123100X"])
def test_check_character_rejects_non_17_digit_input(first17: str) -> None:
    with pytest.raises(ValueError, match="17 ASCII digits"):
        resident_id_check_character(first17)


# --- valid resident IDs ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "number",
    [
        PUBLISHED_EXAMPLE,
        "310101199003071230",
        "440304200002294568",  # 29 February in a leap year
        "510107198510150006",
        "110105202312319992",
    ],
)
def test_known_valid_resident_ids(number: str) -> None:
    assert normalize_id_number(IdType.resident_id, number, today=TODAY) == number


def test_lowercase_x_is_normalised_to_upper() -> None:
    assert normalize_id_number(IdType.resident_id, "11010519491231002x") == PUBLISHED_EXAMPLE


def test_surrounding_whitespace_is_stripped() -> None:
    raw = " \t11010519491231002X \n"
    assert normalize_id_number(IdType.resident_id, raw) == PUBLISHED_EXAMPLE


def test_birth_date_today_is_accepted() -> None:
    number = with_check("11010520240601001")
    assert normalize_id_number(IdType.resident_id, number, today=TODAY) == number


def test_birth_date_1900_01_01_is_accepted() -> None:
    number = with_check("11010519000101001")
    assert normalize_id_number(IdType.resident_id, number, today=TODAY) == number


def test_today_defaults_to_the_real_clock() -> None:
    assert normalize_id_number(IdType.resident_id, PUBLISHED_EXAMPLE) == PUBLISHED_EXAMPLE


# --- resident ID rules -----------------------------------------------------------------------


def test_wrong_check_digit_is_check_digit() -> None:
    assert rule_of(IdType.resident_id, "110105194912310021") == "check-digit"


def test_17_characters_is_length() -> None:
    assert rule_of(IdType.resident_id, "11010519491231002") == "length"


def test_19_characters_is_length() -> None:
    assert rule_of(IdType.resident_id, "11010519491231002X0") == "length"


def test_empty_resident_id_is_length() -> None:
    assert rule_of(IdType.resident_id, "") == "length"


def test_whitespace_only_resident_id_is_length() -> None:
    assert rule_of(IdType.resident_id, "   ") == "length"


def test_letters_in_the_middle_is_characters() -> None:
    assert rule_of(IdType.resident_id, "110105AB491231002X") == "characters"


def test_x_before_last_position_is_characters() -> None:
    assert rule_of(IdType.resident_id, "1101051949123100X2") == "characters"


def test_non_ascii_digits_is_characters() -> None:
    # Arabic-Indic digits pass str.isdigit() but are not valid in an ID number.
    assert rule_of(IdType.resident_id, "١١٠١٠٥19491231002X") == "characters"


def test_internal_space_is_characters() -> None:
    assert rule_of(IdType.resident_id, "110105 9491231002X") == "characters"


def test_february_30_is_birth_date() -> None:
    assert rule_of(IdType.resident_id, with_check("11010519490230002")) == "birth-date"


def test_february_29_in_non_leap_year_is_birth_date() -> None:
    assert rule_of(IdType.resident_id, with_check("11010519490229002")) == "birth-date"


def test_month_13_is_birth_date() -> None:
    assert rule_of(IdType.resident_id, with_check("11010519491331002")) == "birth-date"


def test_month_00_is_birth_date() -> None:
    assert rule_of(IdType.resident_id, with_check("11010519490031002")) == "birth-date"


def test_birth_in_the_future_is_birth_date() -> None:
    assert rule_of(IdType.resident_id, with_check("11010520240602001")) == "birth-date"


def test_year_1899_is_birth_date() -> None:
    assert rule_of(IdType.resident_id, with_check("11010518991231002")) == "birth-date"


def test_gb_example_born_1880_is_birth_date() -> None:
    # The standard's second example has a correct check digit but predates our 1900 floor.
    assert resident_id_check_character("44052418800101001") == "4"
    assert rule_of(IdType.resident_id, "440524188001010014") == "birth-date"


def test_length_is_reported_before_characters() -> None:
    assert rule_of(IdType.resident_id, "ABC") == "length"


def test_birth_date_is_reported_before_check_digit() -> None:
    first17 = "11010519490230002"
    wrong = "0" if resident_id_check_character(first17) != "0" else "1"
    assert rule_of(IdType.resident_id, first17 + wrong) == "birth-date"


# --- error objects ---------------------------------------------------------------------------


def test_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="18 characters"):
        normalize_id_number(IdType.resident_id, "123")


def test_error_str_is_the_message() -> None:
    with pytest.raises(InvalidIdNumber) as excinfo:
        normalize_id_number(IdType.passport, "!!")
    assert str(excinfo.value) == excinfo.value.message


@pytest.mark.parametrize(
    ("id_type", "raw"),
    [
        (IdType.resident_id, "110105194912310021"),  # check-digit
        (IdType.resident_id, "11010519490230002X"),  # birth-date
        (IdType.resident_id, "110105AB491231002X"),  # characters
        (IdType.resident_id, "11010519491231002"),  # length
        (IdType.passport, "E1234567!"),
        (IdType.hk_macau_permit, "X12345678"),
        (IdType.taiwan_permit, "123456789"),
    ],
)
def test_error_message_never_contains_the_number(id_type: IdType, raw: str) -> None:
    with pytest.raises(InvalidIdNumber) as excinfo:
        normalize_id_number(id_type, raw, today=TODAY)
    error = excinfo.value
    assert raw not in error.message
    assert raw.upper() not in error.message
    assert raw not in str(error)
    assert raw not in repr(error)


def test_error_survives_pickling() -> None:
    error = InvalidIdNumber("format", "A passport number must be 5 to 17 letters or digits.")
    restored = pickle.loads(pickle.dumps(error))
    assert (type(restored), restored.rule, restored.message) == (
        InvalidIdNumber,
        "format",
        "A passport number must be 5 to 17 letters or digits.",
    )


# --- passports and permits -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("E12345678", "E12345678"),
        ("ab123", "AB123"),  # shortest allowed, upper-cased
        ("  g1234567  ", "G1234567"),
        ("A" * 17, "A" * 17),  # longest allowed
        ("123456789", "123456789"),
    ],
)
def test_valid_passport(raw: str, expected: str) -> None:
    assert normalize_id_number(IdType.passport, raw) == expected


@pytest.mark.parametrize(
    "raw", ["", "1234", "A" * 18, "E1234-567", "E 1234567", "É12345678", "E１２３４５６７"]
)
def test_invalid_passport_is_format(raw: str) -> None:
    assert rule_of(IdType.passport, raw) == "format"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("H12345678", "H12345678"),
        ("M1234567890", "M1234567890"),
        (" h12345678 ", "H12345678"),
    ],
)
def test_valid_hk_macau_permit(raw: str, expected: str) -> None:
    assert normalize_id_number(IdType.hk_macau_permit, raw) == expected


@pytest.mark.parametrize(
    "raw", ["", "X12345678", "H1234567", "H123456789", "H123456789012", "12345678", "HM2345678"]
)
def test_invalid_hk_macau_permit_is_format(raw: str) -> None:
    assert rule_of(IdType.hk_macau_permit, raw) == "format"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("12345678", "12345678"), ("1234567890", "1234567890"), (" 12345678\n", "12345678")],
)
def test_valid_taiwan_permit(raw: str, expected: str) -> None:
    assert normalize_id_number(IdType.taiwan_permit, raw) == expected


@pytest.mark.parametrize(
    "raw", ["", "1234567", "123456789", "12345678901", "T12345678", "1234567A", "１２３４５６７８"]
)
def test_invalid_taiwan_permit_is_format(raw: str) -> None:
    assert rule_of(IdType.taiwan_permit, raw) == "format"


# --- IdType ----------------------------------------------------------------------------------


def test_id_type_values_equal_names() -> None:
    assert [(t.name, t.value) for t in IdType] == [
        ("resident_id", "resident_id"),
        ("passport", "passport"),
        ("hk_macau_permit", "hk_macau_permit"),
        ("taiwan_permit", "taiwan_permit"),
    ]


# --- masking ---------------------------------------------------------------------------------


def test_mask_resident_id() -> None:
    assert mask_id_number(IdType.resident_id, PUBLISHED_EXAMPLE) == "1101**********002X"


def test_mask_resident_id_other_number() -> None:
    assert mask_id_number(IdType.resident_id, "310101199003071230") == "3101**********1230"


def test_mask_passport() -> None:
    assert mask_id_number(IdType.passport, "E12345678") == "E*****678"


def test_mask_shortest_passport_keeps_one_asterisk() -> None:
    assert mask_id_number(IdType.passport, "AB123") == "A*123"


def test_mask_hk_macau_permit() -> None:
    assert mask_id_number(IdType.hk_macau_permit, "H1234567890") == "H*******890"


def test_mask_taiwan_permit() -> None:
    assert mask_id_number(IdType.taiwan_permit, "12345678") == "1****678"


def test_mask_too_short_to_hint_is_fully_masked() -> None:
    assert mask_id_number(IdType.passport, "AB12") == "****"


# --- make_resident_id ------------------------------------------------------------------------


def test_make_resident_id_reproduces_published_example() -> None:
    assert make_resident_id("110105", date(1949, 12, 31), 2) == PUBLISHED_EXAMPLE


def test_make_resident_id_pads_sequence() -> None:
    assert make_resident_id("310101", date(1990, 3, 7), 7) == "310101199003070078"


def test_make_resident_id_sequence_zero() -> None:
    assert make_resident_id("310101", date(1990, 3, 7), 0) == "310101199003070000"


@given(
    region=st.text(alphabet="0123456789", min_size=6, max_size=6),
    birth=st.dates(min_value=date(1920, 1, 1), max_value=date(2020, 12, 31)),
    sequence=st.integers(min_value=0, max_value=999),
)
def test_make_resident_id_always_validates(region: str, birth: date, sequence: int) -> None:
    number = make_resident_id(region, birth, sequence)
    assert normalize_id_number(IdType.resident_id, number, today=TODAY) == number
    assert number[:17] == f"{region}{birth:%Y%m%d}{sequence:03d}"


@pytest.mark.parametrize("region", ["11010", "1101055", "11010A", "１１０１０５"])
def test_make_resident_id_rejects_bad_region(region: str) -> None:
    with pytest.raises(ValueError, match="region"):
        make_resident_id(region, date(1990, 1, 1), 1)


@pytest.mark.parametrize("sequence", [-1, 1000])
def test_make_resident_id_rejects_bad_sequence(sequence: int) -> None:
    with pytest.raises(ValueError, match="sequence"):
        make_resident_id("110105", date(1990, 1, 1), sequence)


def test_make_resident_id_rejects_birth_before_1900() -> None:
    with pytest.raises(ValueError, match="1900"):
        make_resident_id("110105", date(1899, 12, 31), 1)


# --- IdHasher --------------------------------------------------------------------------------


def test_hash_is_deterministic() -> None:
    first = IdHasher(b"k1").hash(IdType.resident_id, PUBLISHED_EXAMPLE)
    second = IdHasher(b"k1").hash(IdType.resident_id, PUBLISHED_EXAMPLE)
    assert first == second


def test_hash_matches_documented_hmac() -> None:
    expected = hmac.new(b"k1", b"resident_id:11010519491231002X", "sha256").hexdigest()
    assert IdHasher(b"k1").hash(IdType.resident_id, PUBLISHED_EXAMPLE) == expected


def test_hash_differs_by_key() -> None:
    assert IdHasher(b"k1").hash(IdType.passport, "E12345678") != IdHasher(b"k2").hash(
        IdType.passport, "E12345678"
    )


def test_hash_differs_by_id_type() -> None:
    hasher = IdHasher(b"k1")
    assert hasher.hash(IdType.passport, "12345678") != hasher.hash(IdType.taiwan_permit, "12345678")


def test_hash_differs_by_number() -> None:
    hasher = IdHasher(b"k1")
    other = make_resident_id("110105", date(1949, 12, 31), 3)
    assert hasher.hash(IdType.resident_id, PUBLISHED_EXAMPLE) != hasher.hash(
        IdType.resident_id, other
    )


def test_hash_is_64_lowercase_hex_chars() -> None:
    digest = IdHasher(b"k1").hash(IdType.resident_id, PUBLISHED_EXAMPLE)
    assert re.fullmatch(r"[0-9a-f]{64}", digest) is not None


def test_hash_never_contains_the_number() -> None:
    # A digit-only permit is the case where a hex digest could plausibly embed it.
    hasher = IdHasher(b"k1")
    for number in ("12345678", "1234567890"):
        assert number not in hasher.hash(IdType.taiwan_permit, number)
    assert PUBLISHED_EXAMPLE.lower() not in hasher.hash(IdType.resident_id, PUBLISHED_EXAMPLE)


def test_hasher_rejects_empty_key() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        IdHasher(b"")


def test_hasher_repr_hides_key() -> None:
    assert "secret" not in repr(IdHasher(b"secret"))
