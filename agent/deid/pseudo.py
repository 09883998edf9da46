"""Keyed, deterministic replacements: UIDs, pseudonyms, per-patient date offsets.

Everything is an HMAC-SHA256 keyed with the site secret, so every workstation that shares
the secret produces the same outputs for the same inputs, across files, series, studies and
restarts, while nobody without the secret can link an output back to its source.
"""

from __future__ import annotations

import hmac
from datetime import datetime, timedelta
from functools import lru_cache

#: Prefix of every UID that belongs to the standard (SOP classes, transfer syntaxes, coding
#: schemes...): kept as is.
WELL_KNOWN_UID_ROOT = "1.2.840.10008."


@lru_cache(maxsize=1024)
def _mac(secret: bytes, domain: str, value: str) -> bytes:
    # The domain separates uses, so a patient ID and a UID with the same text never collide.
    # Remembered (a pure function): every file of a series asks for the same patient's,
    # study's and series' pseudonyms and date offset.
    # hmac.digest: OpenSSL's one-shot HMAC, the same bytes as hmac.new(...).digest()
    # without building a Python HMAC object (a UID of every file needs one)
    return hmac.digest(secret, f"{domain}\x1f{value}".encode("utf-8", "surrogateescape"),
                       "sha256")


def patient_key(patient_id: str, fallback: str = "") -> str:
    """What identifies a patient for pseudonyms and date offsets.

    The Patient ID; when it is empty, ``fallback`` (the engine passes the Patient's Name and
    Birth Date, else the Study Instance UID) so that one study at least stays consistent.
    """
    pid = patient_id.strip()
    return f"id:{pid}" if pid else f"fallback:{fallback}"


def pseudonym_for_patient(site_name: str, site_secret: bytes, patient_id: str) -> str:
    """The site's pseudonym for a Patient ID, e.g. ``"SITE-7F3A9C21D0"``.

    Used as the de-identified Patient Name and Patient ID and by ``clinic2cloud lookup``.
    """
    return pseudonym_for_key(site_name, site_secret, patient_key(patient_id))


def pseudonym_for_key(site_name: str, site_secret: bytes, key: str) -> str:
    """The pseudonym for a :func:`patient_key`."""
    return f"{site_name}-{_mac(site_secret, 'patient', key).hex()[:10].upper()}"


def short_pseudonym(site_secret: bytes, domain: str, value: str) -> str:
    """16 hex characters, safe as a folder name (study and series pseudonyms)."""
    return _mac(site_secret, domain, value).hex()[:16]


def date_offset_days(site_secret: bytes, key: str, max_days: int) -> int:
    """The keyed per-patient shift, between 1 and ``max_days`` days into the past."""
    n = int.from_bytes(_mac(site_secret, "date-offset", key)[:8], "big")
    return 1 + n % max(1, max_days)


#: UIDs a mapper remembers before it starts again (an engine lives as long as its worker
#: process: the cache must not grow with every instance the agent ever saw).
UID_CACHE_SIZE = 50_000


class UidMapper:
    """Original UID -> ``2.25.<decimal of 128 bits of HMAC>``; caches what it has seen
    (the study's and series' UIDs repeat in every file)."""

    def __init__(self, site_secret: bytes) -> None:
        self._secret = site_secret
        self._cache: dict[str, str] = {}

    def __call__(self, uid: str) -> str:
        uid = uid.strip("\x00 ")
        if not uid or uid.startswith(WELL_KNOWN_UID_ROOT):
            return uid
        new = self._cache.get(uid)
        if new is None:
            n = int.from_bytes(_mac(self._secret, "uid", uid)[:16], "big")
            new = f"2.25.{n}"
            if len(self._cache) >= UID_CACHE_SIZE:
                self._cache.clear()
            self._cache[uid] = new
        return new


_DA_FORMAT = "%Y%m%d"


def shift_da(value: str, days: int) -> str:
    """Shift a DA value (``YYYYMMDD``) back by ``days``; anything unparsable becomes empty."""
    v = value.strip()
    if not v:
        return ""
    return _shift_day(v[:8], days)


@lru_cache(maxsize=4096)
def _shift_day(v: str, days: int) -> str:
    """The shift itself, remembered: a series repeats its few dates in every file
    (``strptime`` costs more than the rest of a date's handling)."""
    try:
        d = datetime.strptime(v, _DA_FORMAT).date()
    except ValueError:
        return ""  # fail closed: an unreadable date is dropped, not kept
    return (d - timedelta(days=days)).strftime(_DA_FORMAT)


def shift_dt(value: str, days: int) -> str:
    """Shift the date part of a DT value; the time of day and UTC offset are kept."""
    v = value.strip()
    if len(v) < 4:
        return ""
    if len(v) < 8:  # YYYY or YYYYMM: shift the first of that period
        base = shift_da((v + "0101")[:8], days)
        return base[: len(v)] if base else ""
    head = shift_da(v[:8], days)
    return head + v[8:] if head else ""
