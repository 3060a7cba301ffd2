"""Resident identity numbers (公民身份号码, GB 11643-1999): the worker key of every punch.

An ID number is 17 digits (address code, birth date, order code) and a check digit
computed with ISO 7064 MOD 11-2; the check digit 10 is written as "X". Only the check
digit is verified here: it catches every single-digit error and every swap of two
adjacent digits, which is what a mistyped or misread number looks like. Birth dates
and region codes are not checked (the national register is the authority for those).
"""

from __future__ import annotations

from functools import lru_cache

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)  # 2**(17-i) mod 11
_CHECK_CHARS = "10X98765432"  # indexed by (weighted sum mod 11)
_DIGITS = frozenset("0123456789")


def check_digit(first17: str) -> str:
    """The check character ("0"-"9" or "X") for 17 digits. Raises ValueError otherwise."""
    if len(first17) != 17 or not _DIGITS.issuperset(first17):
        raise ValueError(f"need exactly 17 digits, got {first17!r}")
    total = sum(int(c) * w for c, w in zip(first17, _WEIGHTS))
    return _CHECK_CHARS[total % 11]


# A site's terminals see the same few hundred workers all day, and this runs for every
# record of every backlog (20% of the gateway's CPU when ingesting one, by py-spy): a
# cache of 65,536 numbers (~10 MB at most) turns the check into one dict lookup.
@lru_cache(maxsize=65_536)
def is_valid_id_number(value: str) -> bool:
    """True when `value` is 17 digits and the right check character (upper-case "X" only)."""
    if len(value) != 18 or not _DIGITS.issuperset(value[:17]):
        return False
    return check_digit(value[:17]) == value[17]


MASK_KEEP_HEAD, MASK_KEEP_TAIL = 6, 4  # the region code and the last four: enough to tell people apart


def mask_id_number(value: str) -> str:
    """`value` with all but its first 6 and last 4 characters replaced by "*"
    (620102********4516). Anything shorter than 11 characters is masked whole: it is not
    an ID number, and showing most of it could still identify someone."""
    if len(value) <= MASK_KEEP_HEAD + MASK_KEEP_TAIL:
        return "*" * len(value)
    return value[:MASK_KEEP_HEAD] + "*" * (len(value) - MASK_KEEP_HEAD - MASK_KEEP_TAIL) + value[-MASK_KEEP_TAIL:]
