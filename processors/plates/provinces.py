"""The 77 Thai provinces as written on licence plates, and snapping of OCR text to them.

Plates carry the province's full Thai name on the second line (Bangkok is written
``กรุงเทพมหานคร``). OCR of that line is noisy, so :func:`snap_province` maps any string to the
nearest canonical name by Levenshtein distance over Unicode code points and returns the distance,
which callers use to lower their confidence.
"""

from __future__ import annotations

import unicodedata
from typing import NamedTuple

PROVINCES: tuple[str, ...] = (
    "กรุงเทพมหานคร", "กระบี่", "กาญจนบุรี", "กาฬสินธุ์", "กำแพงเพชร", "ขอนแก่น", "จันทบุรี",
    "ฉะเชิงเทรา", "ชลบุรี", "ชัยนาท", "ชัยภูมิ", "ชุมพร", "เชียงราย", "เชียงใหม่", "ตรัง", "ตราด",
    "ตาก", "นครนายก", "นครปฐม", "นครพนม", "นครราชสีมา", "นครศรีธรรมราช", "นครสวรรค์", "นนทบุรี",
    "นราธิวาส", "น่าน", "บึงกาฬ", "บุรีรัมย์", "ปทุมธานี", "ประจวบคีรีขันธ์", "ปราจีนบุรี", "ปัตตานี",
    "พระนครศรีอยุธยา", "พะเยา", "พังงา", "พัทลุง", "พิจิตร", "พิษณุโลก", "เพชรบุรี", "เพชรบูรณ์",
    "แพร่", "ภูเก็ต", "มหาสารคาม", "มุกดาหาร", "แม่ฮ่องสอน", "ยโสธร", "ยะลา", "ร้อยเอ็ด", "ระนอง",
    "ระยอง", "ราชบุรี", "ลพบุรี", "ลำปาง", "ลำพูน", "เลย", "ศรีสะเกษ", "สกลนคร", "สงขลา", "สตูล",
    "สมุทรปราการ", "สมุทรสงคราม", "สมุทรสาคร", "สระแก้ว", "สระบุรี", "สิงห์บุรี", "สุโขทัย",
    "สุพรรณบุรี", "สุราษฎร์ธานี", "สุรินทร์", "หนองคาย", "หนองบัวลำภู", "อ่างทอง", "อำนาจเจริญ",
    "อุดรธานี", "อุตรดิตถ์", "อุทัยธานี", "อุบลราชธานี",
)

_SARA_AM = "\u0e33"  # ำ
_NIKHAHIT_AA = "\u0e4d\u0e32"  # ํ + า, how OCR often splits ำ


class ProvinceMatch(NamedTuple):
    """A canonical province name and its edit distance from the text that was snapped."""

    name: str
    distance: int


def normalise_thai(text: str) -> str:
    """Return ``text`` in NFC with whitespace, zero-width and non-Thai-letter noise removed."""
    text = unicodedata.normalize("NFC", text).replace(_NIKHAHIT_AA, _SARA_AM)
    return "".join(ch for ch in text if "\u0e01" <= ch <= "\u0e4e")


def edit_distance(a: str, b: str, limit: int | None = None) -> int:
    """Return the Levenshtein distance between ``a`` and ``b`` (capped just above ``limit``)."""
    if a == b:
        return 0
    if len(a) < len(b):
        a, b = b, a
    cap = limit + 1 if limit is not None else len(a)
    if len(a) - len(b) >= cap:
        return cap
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        if min(current) >= cap:
            return cap
        previous = current
    return min(previous[-1], cap)


def snap_province(text: str) -> ProvinceMatch:
    """Return the canonical province nearest to ``text`` with its edit distance."""
    cleaned = normalise_thai(text)
    best = ProvinceMatch(PROVINCES[0], edit_distance(cleaned, PROVINCES[0]))
    for name in PROVINCES[1:]:
        if best.distance == 0:
            break
        distance = edit_distance(cleaned, name, limit=best.distance)
        if distance < best.distance:
            best = ProvinceMatch(name, distance)
    return best


def is_province(name: str) -> bool:
    """Return whether ``name`` is exactly one of the 77 canonical province names."""
    return name in _PROVINCE_SET


_PROVINCE_SET = frozenset(PROVINCES)
