"""The Thai car registration format: alphabet, validation and canonical spelling.

A car registration is an optional leading digit 1-9, two Thai consonants, a space, then a number
of 1-4 digits without leading zero: ``1กข 1234``, ``กข 56``.
"""

from __future__ import annotations

import re
import unicodedata

#: Thai consonants used in registrations (the obsolete ฃ and ฅ never appear).
PLATE_CONSONANTS = "กขคฆงจฉชซฌญฎฏฐฑฒณดตถทธนบปผฝพฟภมยรลวศษสหฬอฮ"
DIGITS = "0123456789"
REGISTRATION_RE = re.compile(rf"^([1-9]?)([{PLATE_CONSONANTS}]{{2}}) ([1-9][0-9]{{0,3}})$")


def normalise_registration(text: str) -> str:
    """Return ``text`` in canonical form: NFC, Thai/Arabic digits, one space before the number."""
    text = unicodedata.normalize("NFC", text)
    text = "".join(str(int(ch)) if ch.isdigit() else ch for ch in text)
    compact = "".join(ch for ch in text if not ch.isspace() and ch not in "-.")
    match = re.match(rf"^([1-9]?[{PLATE_CONSONANTS}]{{2}})([0-9]+)$", compact)
    return f"{match.group(1)} {match.group(2)}" if match else text.strip()


def is_registration(text: str) -> bool:
    """Return whether ``text`` is a well-formed car registration in canonical spelling."""
    return REGISTRATION_RE.match(text) is not None
