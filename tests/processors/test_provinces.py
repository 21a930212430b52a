"""Province names and snapping of OCR text to them."""

from __future__ import annotations

import pytest

from citystream.processors.plates.provinces import (
    PROVINCES,
    edit_distance,
    is_province,
    normalise_thai,
    snap_province,
)


@pytest.mark.unit
def test_there_are_77_distinct_provinces_including_bangkok_full_name() -> None:
    assert len(PROVINCES) == 77
    assert len(set(PROVINCES)) == 77
    assert "กรุงเทพมหานคร" in PROVINCES
    assert "ปทุมธานี" in PROVINCES


@pytest.mark.unit
@pytest.mark.parametrize("name", PROVINCES)
def test_every_canonical_name_snaps_to_itself_at_distance_zero(name: str) -> None:
    assert snap_province(name) == (name, 0)
    assert is_province(name)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("ocr", "expected", "distance"),
    [
        ("ปทุมธาน", "ปทุมธานี", 1),  # dropped vowel
        ("กรงเทพมหานคร", "กรุงเทพมหานคร", 1),  # dropped sara u
        ("เชียงไหม่", "เชียงใหม่", 1),  # wrong sara ai
        ("  นนท บุรี \n", "นนทบุรี", 0),  # spaces and newline are noise
        ("|ขอนแก่น-", "ขอนแก่น", 0),  # OCR punctuation is noise
    ],
)
def test_noisy_ocr_snaps_to_the_nearest_province(ocr: str, expected: str, distance: int) -> None:
    match = snap_province(ocr)
    assert match.name == expected
    assert match.distance == distance


@pytest.mark.unit
def test_decomposed_sara_am_is_normalised() -> None:
    assert normalise_thai("ลําปาง") == "ลำปาง"
    assert snap_province("ลําปาง") == ("ลำปาง", 0)


@pytest.mark.unit
def test_empty_text_still_snaps_with_a_large_distance() -> None:
    match = snap_province("")
    assert match.name in PROVINCES
    assert match.distance == len(match.name)


@pytest.mark.unit
def test_edit_distance_known_values_and_cap() -> None:
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3
    assert edit_distance("abc", "abc") == 0
    assert edit_distance("abcdef", "uvwxyz", limit=2) == 3
    assert not is_province("Bangkok")
