"""Tesseract (Thai model, single-line mode) for one line of text, one API per thread.

``tesserocr.PyTessBaseAPI`` is not thread-safe and costs ~100 ms to create, so each thread keeps its
own instance for its lifetime. Nothing is downloaded: the ``tha`` model comes from the Debian
``tesseract-ocr-tha`` package.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import tesserocr
from numpy.typing import NDArray

TESSDATA = Path("/usr/share/tesseract-ocr/5/tessdata")
_local = threading.local()


def tesseract_api(tessdata: Path = TESSDATA, lang: str = "tha") -> Any:
    """Return this thread's Tesseract API for ``lang`` in single-line mode, creating it once."""
    key = (str(tessdata), lang)
    apis: dict[tuple[str, str], Any] = _local.__dict__.setdefault("apis", {})
    if key not in apis:
        if not (tessdata / f"{lang}.traineddata").is_file():
            raise FileNotFoundError(f"Tesseract model {lang}.traineddata not found in {tessdata}")
        apis[key] = tesserocr.PyTessBaseAPI(path=str(tessdata), lang=lang, psm=tesserocr.PSM.SINGLE_LINE)
    return apis[key]


def ocr_line(image: NDArray[np.uint8], tessdata: Path = TESSDATA, lang: str = "tha") -> str:
    """Return Tesseract's text for one line of dark text on a light 8-bit grayscale image."""
    api = tesseract_api(tessdata, lang)
    data = np.ascontiguousarray(image)
    height, width = data.shape
    api.SetImageBytes(data.tobytes(), width, height, 1, width)
    text: str = api.GetUTF8Text()
    return text.strip()

