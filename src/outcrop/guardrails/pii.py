"""Sensitive information: the 31 PII entity types Bedrock names, found in text.

Each type is a pattern plus, where the number carries one, its check: Luhn for cards
(``python-stdnum``), ISO 7064 for IBANs, the SSA's area/group/serial rules for SSNs and
the IRS's group ranges for ITINs, ABA checksums for routing numbers, mod-11 for NHS
numbers and UTRs, the SIN Luhn rule, the VIN check digit, ``ipaddress`` for IPs and
``phonenumbers`` (Google's libphonenumber) for phones. Numbers that carry no check and
would otherwise collide with any other digit string (bank accounts, passports, driver
IDs, plates, PINs, CVVs, UTRs, NHS and health-card numbers) are recognised only after a
cue ("account number", "passport no.", "CVV", ...), as a person writing them would.
NAME and ADDRESS come from :mod:`outcrop.guardrails.names` (dictionary and patterns).
docs/guardrails.md lists, per type, how it is detected and how well.

A match is reported once, under the most specific type: overlapping candidates are
settled by priority (checked numbers first), then by length.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import phonenumbers
from stdnum import bic, iban, luhn
from stdnum.ca import bc_phn, sin
from stdnum.gb import nhs, utr
from stdnum.us import itin, rtn, ssn

from outcrop.guardrails import names

_NUM = r"(?:number|num|no\.?|nr\.?|#|id)"
_IS = r"(?:\s*(?:is|was|=|:|-)\s*|\s+)"


def _cue(cue: str, value: str) -> re.Pattern[str]:
    """``cue`` (case-insensitive), an optional "number"/"no."/"#", "is"/":", then ``value``."""
    return re.compile(rf"(?i:\b(?:{cue})(?:\s+{_NUM})?){_IS}({value})(?![\w-])")


@dataclass(frozen=True)
class Detector:
    type: str
    pattern: re.Pattern[str]
    group: int = 0
    check: Callable[[str], bool] | None = None
    priority: int = 1


@dataclass(frozen=True)
class Entity:
    type: str
    start: int
    end: int
    text: str
    priority: int = 1


def _digits(s: str) -> str:
    return re.sub(r"\D", "", s)


def _card(s: str) -> bool:
    d = _digits(s)
    if not 13 <= len(d) <= 19 or not luhn.is_valid(d):
        return False
    # Issuer prefixes in use (Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay, Maestro).
    return bool(re.match(r"4|5[1-5]|2[2-7]|3[47]|3[068]|35|6(?:011|5|4[4-9]|2)|5[06-8]|6", d))


def _ssn(s: str) -> bool:
    return ssn.is_valid(_digits(s))


def _itin(s: str) -> bool:
    return itin.is_valid(_digits(s))


def _ip(s: str) -> bool:
    try:
        ipaddress.ip_address(s)
    except ValueError:
        return False
    return True


def _secret_key(s: str) -> bool:
    # 40 base64 characters with all three classes: what an AWS secret access key looks like;
    # hex digests (SHA-1 is also 40 characters) have no upper case.
    return bool(re.search(r"[A-Z]", s) and re.search(r"[a-z]", s) and re.search(r"\d", s))


def _vin(s: str) -> bool:
    values = {c: i for i, c in enumerate("0123456789")}
    for letters, start in (("ABCDEFGH", 1), ("JKLMN", 1), ("P", 7), ("R", 9), ("STUVWXYZ", 2)):
        for offset, letter in enumerate(letters):
            values[letter] = start + offset
    weights = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)
    total = sum(values[c] * w for c, w in zip(s, weights, strict=True))
    check = "X" if total % 11 == 10 else str(total % 11)
    return s[8] == check and bool(re.search(r"\d", s)) and bool(re.search(r"[A-Z]", s))


def _swift(s: str) -> bool:
    return bic.is_valid(s)


def _iban(s: str) -> bool:
    return iban.is_valid(s)


def _health(s: str) -> bool:
    d = _digits(s)
    return (len(d) == 10 and (luhn.is_valid(d) or bc_phn.is_valid(d))) or False


_DETECTORS: tuple[Detector, ...] = (
    Detector("EMAIL", re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"), priority=3),
    Detector("URL", re.compile(r"\b(?:https?://|ftp://|www\.)[^\s<>\"'`]+[^\s<>\"'`.,;:!?)\]]"), priority=2),
    Detector("AWS_ACCESS_KEY", re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|APKA|AROA|ASCA)[A-Z0-9]{16}\b"), priority=4),
    Detector("AWS_SECRET_KEY", re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])"), check=_secret_key, priority=3),
    Detector("CREDIT_DEBIT_CARD_NUMBER", re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])"), check=_card, priority=4),
    Detector("CREDIT_DEBIT_CARD_CVV", _cue(r"cvv2?|cvc2?|cid|csc|security\s+code|card\s+verification(?:\s+(?:value|code))?", r"\d{3,4}"), 1, priority=3),
    Detector("CREDIT_DEBIT_CARD_EXPIRY", _cue(r"exp(?:\.|iry|iration|ires)?(?:\s+date)?|valid\s+(?:thru|through|until)", r"(?:0[1-9]|1[0-2])\s?[/-]\s?(?:20)?\d{2}"), 1, priority=3),
    Detector("INTERNATIONAL_BANK_ACCOUNT_NUMBER", re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b"), check=_iban, priority=4),
    Detector("SWIFT_CODE", _cue(r"swift|bic|swift/bic|bic/swift", r"[A-Z]{6}[A-Z0-9]{2}(?:[A-Z0-9]{3})?"), 1, check=_swift, priority=3),
    Detector("SWIFT_CODE", re.compile(r"\b[A-Z]{6}(?:[A-Z0-9]{2}(?:[A-Z0-9]{3})|[0-9][A-Z0-9]|[A-Z][0-9])\b"), check=_swift, priority=2),
    Detector("US_SOCIAL_SECURITY_NUMBER", re.compile(r"(?<![\d-])\d{3}([- ])\d{2}\1\d{4}(?![\d-])"), check=_ssn, priority=3),
    Detector("US_SOCIAL_SECURITY_NUMBER", _cue(r"ssn|social\s+security", r"\d{9}"), 1, check=_ssn, priority=3),
    Detector("US_INDIVIDUAL_TAX_IDENTIFICATION_NUMBER", re.compile(r"(?<![\d-])9\d{2}([- ]?)\d{2}\1\d{4}(?![\d-])"), check=_itin, priority=3),
    Detector("US_BANK_ROUTING_NUMBER", _cue(r"routing|aba|rtn|routing\s+transit", r"\d{9}"), 1, check=rtn.is_valid, priority=3),
    Detector("US_BANK_ACCOUNT_NUMBER", _cue(r"(?:bank\s+|checking\s+|savings\s+)?(?:account|acct\.?)", r"\d{6,17}"), 1, priority=2),
    Detector("US_PASSPORT_NUMBER", _cue(r"passport", r"[A-Z]?\d{8,9}"), 1, priority=2),
    Detector("DRIVER_ID", _cue(r"driver'?s?\s+licen[cs]e|driving\s+licen[cs]e|driver\s+id|dl", r"(?=[A-Z0-9-]*\d)[A-Z0-9][A-Z0-9-]{4,19}"), 1, priority=2),
    Detector("LICENSE_PLATE", _cue(r"licen[cs]e\s+plate|plate|registration|reg\.?", r"(?=[A-Z0-9 -]*\d)[A-Z0-9]{1,4}[ -]?[A-Z0-9]{1,4}"), 1, priority=2),
    Detector("VEHICLE_IDENTIFICATION_NUMBER", re.compile(r"\b[A-HJ-NPR-Z0-9]{17}\b"), check=_vin, priority=3),
    Detector("UK_NATIONAL_INSURANCE_NUMBER", re.compile(r"\b(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"), priority=3),
    Detector("UK_NATIONAL_HEALTH_SERVICE_NUMBER", _cue(r"nhs|national\s+health\s+service", r"\d{3}[ -]?\d{3}[ -]?\d{4}"), 1, check=nhs.is_valid, priority=3),
    Detector("UK_UNIQUE_TAXPAYER_REFERENCE_NUMBER", _cue(r"utr|unique\s+taxpayer\s+reference|tax\s+reference", r"\d{5} ?\d{5}"), 1, check=utr.is_valid, priority=3),
    Detector("CA_SOCIAL_INSURANCE_NUMBER", re.compile(r"(?<![\d-])\d{3}([- ])\d{3}\1\d{3}(?![\d-])"), check=sin.is_valid, priority=3),
    Detector("CA_SOCIAL_INSURANCE_NUMBER", _cue(r"sin|social\s+insurance", r"\d{9}"), 1, check=sin.is_valid, priority=3),
    Detector("CA_HEALTH_NUMBER", _cue(r"health\s+(?:card|number|insurance)|ohip|phn|hcn", r"\d{4}[ -]?\d{3}[ -]?\d{3}(?:[ -]?[A-Z]{2})?"), 1, check=_health, priority=3),
    Detector("IP_ADDRESS", re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])"), check=_ip, priority=2),
    Detector("IP_ADDRESS", re.compile(r"(?<![\w:])(?=[0-9A-Fa-f:]*::|(?:[0-9A-Fa-f]{1,4}:){7})(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])"), check=_ip, priority=2),
    Detector("MAC_ADDRESS", re.compile(r"\b[0-9A-Fa-f]{2}([:-])(?:[0-9A-Fa-f]{2}\1){4}[0-9A-Fa-f]{2}\b|\b[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\b"), priority=3),
    Detector("AGE", re.compile(r"\b\d{1,3}(?:\s+|-)(?:years?|yrs?)(?:\s+|-)old\b"), priority=2),
    Detector("AGE", _cue(r"age|aged", r"\d{1,3}"), 1, priority=2),
    Detector("PASSWORD", _cue(r"password|passwd|pwd|passcode|pass\s*phrase", r"[^\s\"']{3,64}?(?=[.,;!?]?(?:\s|$))"), 1, priority=2),
    Detector("USERNAME", _cue(r"user\s*name|user\s*id|login|handle", r"@?[A-Za-z0-9_.-]*[A-Za-z0-9_]"), 1, priority=2),
    Detector("PIN", _cue(r"pin(?:\s+code)?", r"\d{4,8}"), 1, priority=2),
)  # fmt: skip


def _regex_entities(text: str, wanted: set[str]) -> Iterable[Entity]:
    for d in _DETECTORS:
        if d.type not in wanted:
            continue
        for m in d.pattern.finditer(text):
            value = m.group(d.group)
            if not value:
                continue
            candidate = (
                value.replace(" ", "") if d.type == "INTERNATIONAL_BANK_ACCOUNT_NUMBER" else value
            )
            if d.check is not None and not d.check(candidate):
                continue
            yield Entity(d.type, m.start(d.group), m.end(d.group), value, d.priority)


def _phones(text: str) -> Iterable[Entity]:
    # VALID: the number's length and prefix are right for its region (a bare 10-digit
    # number that no plan allots is not a phone number). US is the default region for
    # numbers written without a country code.
    for m in phonenumbers.PhoneNumberMatcher(text, "US", leniency=phonenumbers.Leniency.VALID):
        yield Entity("PHONE", m.start, m.end, m.raw_string, 2)


def find_entities(text: str, types: Iterable[str]) -> list[Entity]:
    """The PII entities of the given types in ``text``, in order, never overlapping."""
    wanted = set(types)
    found = list(_regex_entities(text, wanted))
    if "PHONE" in wanted and re.search(r"\d{3}", text):
        found.extend(_phones(text))
    if "NAME" in wanted:
        found.extend(Entity("NAME", s, e, text[s:e], 1) for s, e in names.find_names(text))
    if "ADDRESS" in wanted:
        found.extend(Entity("ADDRESS", s, e, text[s:e], 2) for s, e in names.find_addresses(text))
    chosen: list[Entity] = []
    for entity in sorted(found, key=lambda e: (-e.priority, -(e.end - e.start), e.start)):
        if all(entity.end <= c.start or entity.start >= c.end for c in chosen):
            chosen.append(entity)
    return sorted(chosen, key=lambda e: e.start)
