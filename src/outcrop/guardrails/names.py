"""NAME and ADDRESS: recognised without a statistical NER model.

Presidio, the usual answer, needs a spaCy pipeline (``en_core_web_lg``) that is published
on GitHub, not on PyPI, so it cannot be installed here; the PyPI copies of spaCy models
are third-party re-uploads. So:

* NAME: a first name from ``gender-guesser``'s dictionary (about 48,000 given names, many
  countries) followed by one or two capitalised words; a title (Mr, Ms, Dr, ...) followed
  by capitalised words; a capitalised word after a cue ("my name is", "Dear", "signed");
  or a lone dictionary first name in mid-sentence. Given names that are also common
  English words (Will, May, Mark, ...) only count in the first three forms.
* ADDRESS: a US/Canadian street line (house number, street name, a street suffix such as
  "Street"/"Ave"/"Blvd", an optional unit, city, state or province and ZIP or postal code)
  and UK postcodes with the street line before them.

docs/guardrails.md reports precision and recall on the project's labeled sentences.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources

_TITLE = r"(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Dame|Madam|Lord|Lady|Rev)\.?"
_CAP = r"[A-Z][a-z]+(?:[-'][A-Z][a-z]+)?"
_CAPS = re.compile(rf"\b{_CAP}\b")
_TITLED = re.compile(rf"\b{_TITLE}\s+(?:{_CAP}\s+)?{_CAP}\b")
_CUED = re.compile(
    rf"(?:(?i:my\s+name\s+is|name\s*:|i\s+am\s+called|call\s+me|dear|signed,?|regards,|"
    rf"sincerely,|contact\s+person\s*:)\s+)({_CAP}(?:\s+{_CAP}){{0,2}})"
)

# Given names that are ordinary words too: only a cue or a following surname makes them
# names ("Will Smith" yes, "Will you" no).
_AMBIGUOUS = set(
    """will may mark bill rose grace faith hope joy summer art don ben sue chase hunter page
    april june august an in is it am as at be by do go he me my no of on or so to up us we
    la le de del van von the and but for not all any can had her was one our out day get
    has him his how man new now old see two way who boy did its let put say she too use dot
    king queen prince major long young white black brown green gray grey stone wood hill
    ford rich sky sunny star dawn eve honey ivy lily daisy iris violet pearl ruby amber
    crystal jewel jade autumn winter spring storm rain river lake forest bay ray sol lane
    bud buck chip chuck jack jim tim tom dick pat peg penny nick rob guy gene fanny tad
    dean earl baron duke bishop carter cook miller smith taylor turner parker walker
    mason price rice lee long young hall wall north south east west general paris london
    florence georgia virginia carolina victoria austin jordan sydney chelsea dallas houston
    orlando phoenix madison regina denver china india israel kenya asia africa america
    christmas easter google amazon apple tesla""".split()
)
# Capitalised words that begin sentences or name places and months, never a surname here.
_NOT_SURNAME = set(
    """I The A An And But Or If In On At To For Of By With From As Is It This That These
    Those He She We They You My Your His Her Our Their Its Mr Mrs Ms Dr Monday Tuesday
    Wednesday Thursday Friday Saturday Sunday January February March April May June July
    August September October November December Street Avenue Road Please Thanks Thank Hello
    Hi Dear Yes No Not Can Will Would Should Could Today Tomorrow Yesterday""".split()
)


@lru_cache(maxsize=1)
def first_names() -> frozenset[str]:
    """Lower-cased given names from gender-guesser's ``nam_dict.txt``."""
    raw = resources.files("gender_guesser").joinpath("data/nam_dict.txt").read_bytes()
    out: set[str] = set()
    for line in raw.decode("iso-8859-1").splitlines():
        if line.startswith("#") or len(line) < 30:
            continue
        name = line[3:29].strip()
        # '+' joins compound spellings; the dictionary's own umlaut escapes start with '<'.
        if name and name.isalpha() and len(name) > 1:
            out.add(name.casefold())
    return frozenset(out)


def _sentence_start(text: str, at: int) -> bool:
    before = text[:at].rstrip()
    return not before or before[-1] in ".!?\n:\"'("


def find_names(text: str) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for m in _TITLED.finditer(text):
        spans.append((m.start(), m.end()))
    for m in _CUED.finditer(text):
        spans.append((m.start(1), m.end(1)))
    given = first_names()
    words = list(_CAPS.finditer(text))
    i = 0
    while i < len(words):
        w = words[i]
        low = w.group(0).casefold()
        if low not in given or w.group(0) in _NOT_SURNAME:
            i += 1
            continue
        end, j = w.end(), i + 1
        # Surnames: up to two more capitalised words separated by single spaces.
        while j < len(words) and j <= i + 2 and text[end : words[j].start()] == " ":
            if words[j].group(0) in _NOT_SURNAME:
                break
            end = words[j].end()
            j += 1
        if j > i + 1 or (low not in _AMBIGUOUS and not _sentence_start(text, w.start())):
            spans.append((w.start(), end))
        i = j
    return _merge(spans)


_SUFFIX = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Place|Pl|"
    r"Terrace|Ter|Way|Parkway|Pkwy|Highway|Hwy|Square|Sq|Circle|Cir|Trail|Trl|Crescent|"
    r"Close|Row|Walk|Plaza|Alley|Loop|Path|Pike|Gardens|Mews)\.?"
)
_STATE = (
    r"(?:A[LKZR]|C[AOT]|D[EC]|FL|GA|HI|I[DLNA]|K[SY]|LA|M[EDAINSOT]|N[EVHJMYCD]|O[HKR]|PA|RI|"
    r"S[CD]|T[NX]|UT|V[TA]|W[AVIY]|AB|BC|MB|NB|NL|NS|NT|NU|ON|PE|QC|SK|YT)"
)
_STREET = re.compile(
    rf"\b\d{{1,6}}[A-Za-z]?\s+(?:[NSEW]\.?\s+)?(?:[A-Z0-9][A-Za-z0-9'.-]*\s+){{1,4}}{_SUFFIX}"
    rf"(?:\s+(?:[NSEW]|NE|NW|SE|SW)\b)?"
    rf"(?:,?\s+(?:Apt|Apartment|Suite|Ste|Unit|Fl|Floor|#)\.?\s*[A-Za-z0-9-]+)?"
    rf"(?:,?\s+[A-Z][A-Za-z.]+(?:\s+[A-Z][A-Za-z.]+){{0,2}},?\s+{_STATE}"
    rf"(?:\s+\d{{5}}(?:-\d{{4}})?|\s+[A-Z]\d[A-Z]\s?\d[A-Z]\d)?)?\b"
)
_UK_POSTCODE = re.compile(
    r"\b(?:\d{1,4}[A-Za-z]?\s+(?:[A-Z][a-z]+\s+){1,3}" + _SUFFIX + r",?\s+)?"
    r"(?:[A-Z][a-z]+,?\s+)?[A-Z]{1,2}\d[A-Z\d]?\s+\d[A-Z]{2}\b"
)


def find_addresses(text: str) -> list[tuple[int, int]]:
    spans = [(m.start(), m.end()) for m in _STREET.finditer(text)]
    spans += [(m.start(), m.end()) for m in _UK_POSTCODE.finditer(text)]
    return _merge(spans)


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if out and start < out[-1][1]:
            out[-1] = (out[-1][0], max(end, out[-1][1]))
        else:
            out.append((start, end))
    return out
