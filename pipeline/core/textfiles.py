"""Reading the text files people give a run: metadata, pairing, overrides, configuration.

Such files come from spreadsheets and editors as often as from scripts. :func:`read_text` reads
UTF-8 with or without a byte-order mark (Excel's "CSV UTF-8" writes one, and so do some Windows
editors); any other encoding is one line that names it (UTF-16 or UTF-32 by their mark or their
zero bytes, else the first byte that is not UTF-8, with the usual suspects), never a silent
misreading such as a first column named ``\\ufeffvideo_id``. :func:`csv_rows` refuses a CSV whose
header is separated by something other than a comma (a semicolon, as spreadsheets write in
locales with a decimal comma, a tab, a bar) and names that delimiter.
"""

from __future__ import annotations

import codecs
import csv
import io
from pathlib import Path

# byte-order marks of the encodings that are not UTF-8, longest first (UTF-32 LE starts like UTF-16 LE)
_MARKS = (
    (codecs.BOM_UTF32_LE, "UTF-32 (little-endian)"),
    (codecs.BOM_UTF32_BE, "UTF-32 (big-endian)"),
    (codecs.BOM_UTF16_LE, "UTF-16 (little-endian)"),
    (codecs.BOM_UTF16_BE, "UTF-16 (big-endian)"),
)
DELIMITERS = {";": "a semicolon", "\t": "a tab", "|": "a vertical bar"}


class TextFileError(ValueError):
    """A text file that is not UTF-8, or a CSV with another delimiter; the message names the file."""


def read_text(path: str | Path, what: str = "file") -> str:
    """The text of ``path``, read as UTF-8 with or without a byte-order mark.

    ``what`` names the file's role in the message (``metadata file``, ``pairing file``).
    Raises :class:`TextFileError` naming the encoding the file is in, and OSError as ``open`` does.
    """
    data = Path(path).read_bytes()
    return decode_text(data, f"{path}: {what}")


def decode_text(data: bytes, where: str) -> str:
    """``data`` as text (see :func:`read_text`); ``where`` begins the error's message."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    else:
        for mark, name in _MARKS:
            if data.startswith(mark):
                raise TextFileError(
                    f"{where} is {name} text (byte-order mark {mark.hex(' ').upper()}); save it as UTF-8"
                )
        zeros = _zero_pattern(data[:512])
        if zeros:
            raise TextFileError(f"{where} is {zeros} text (every other byte is zero); save it as UTF-8")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        byte = data[err.start]
        raise TextFileError(
            f"{where} is not UTF-8 text (byte 0x{byte:02x} at offset {err.start}: {err.reason}; "
            f"{_guess(data)}); save it as UTF-8"
        ) from None


def _zero_pattern(head: bytes) -> str | None:
    """``UTF-16 (little-endian)`` etc. when ASCII text shows as every other byte zero (no mark)."""
    if len(head) < 4:
        return None
    even, odd = head[0::2], head[1::2]
    if odd.count(0) >= 0.9 * len(odd) and even.count(0) == 0:
        return "UTF-16 (little-endian, no byte-order mark)"
    if even.count(0) >= 0.9 * len(even) and odd.count(0) == 0:
        return "UTF-16 (big-endian, no byte-order mark)"
    return None


def _guess(data: bytes) -> str:
    try:
        data.decode("cp1252")
    except UnicodeDecodeError:
        return "perhaps Latin-1 or another 8-bit code page"
    return "perhaps Windows-1252 or Latin-1, as spreadsheets save 'CSV' on Windows"


def csv_rows(text: str, where: str, *, skip_comments: bool = False) -> csv.DictReader:
    """A ``csv.DictReader`` over ``text`` once its header is known to be comma-separated.

    ``where`` names the file in the error. A header with no comma but a semicolon, tab or bar
    is a :class:`TextFileError` that names the delimiter. ``skip_comments`` drops lines whose
    first non-blank character is ``#``.
    """
    lines = io.StringIO(text, newline="")
    source = (line for line in lines if not line.lstrip().startswith("#")) if skip_comments else lines
    reader = csv.DictReader(source)
    header = _first_line(text, skip_comments)
    if header is not None and "," not in header:
        for delimiter, name in DELIMITERS.items():
            if delimiter in header:
                raise TextFileError(
                    f"{where}: the columns are separated by {name} ({delimiter!r}), not a comma "
                    f"(header: {header.strip()[:80]!r}); save it comma-separated"
                )
    return reader


def _first_line(text: str, skip_comments: bool) -> str | None:
    for line in text.splitlines():
        if not line.strip() or (skip_comments and line.lstrip().startswith("#")):
            continue
        return line
    return None
