"""Documents the knowledge-base tests ingest: real files of every supported type, made here."""

from __future__ import annotations

import io
import json
from pathlib import Path


def pdf_bytes(lines: list[str]) -> bytes:
    """A minimal one-page PDF whose text layer holds ``lines`` (Helvetica, one per line)."""

    def esc(s: str) -> str:
        return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    ops = ["BT", "/F1 12 Tf", "14 TL", "72 720 Td"]
    for line in lines:
        ops.append(f"({esc(line)}) Tj T*")
    ops.append("ET")
    stream = "\n".join(ops).encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{i} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for off in offsets:
        out.write(f"{off:010d} 00000 n \n".encode())
    out.write(
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return out.getvalue()


def docx_bytes(paragraphs: list[str]) -> bytes:
    from docx import Document

    doc = Document()
    for p in paragraphs:
        doc.add_paragraph(p)
    out = io.BytesIO()
    doc.save(out)
    return out.getvalue()


GARDEN = (
    "The community garden on Elm Street opens at seven in the morning. Volunteers water the "
    "tomato beds every Tuesday. The compost bins are emptied on the first Saturday of each "
    "month, and the tool shed code is 4417."
)
VOLCANO = (
    "# Volcanoes\n\nMount Ruapehu is an active stratovolcano in New Zealand. Its crater lake "
    "is acidic and warm. The last major eruption happened in 1996, covering nearby ski "
    "fields with ash."
)
BAKERY = (
    "<html><head><title>Juniper Bakery</title><style>p{color:red}</style></head><body>"
    "<h1>Juniper Bakery</h1><p>Our sourdough loaves rise for thirty hours before baking."
    "</p><p>The bakery is closed on Mondays.</p><script>var hidden = 'never indexed';"
    "</script></body></html>"
)
LIGHTHOUSE = [
    "The Kettle Point lighthouse was built in 1871.",
    "Its lamp is visible for twenty-two nautical miles.",
    "Keeper Agnes Wobble tended it for forty years.",
]
ORBIT = [
    "The satellite Bluebird-3 orbits Earth every ninety-two minutes.",
    "It measures sea surface temperature with an infrared radiometer.",
]
TRAINS = "route,departs,platform\nNorthern Express,08:15,4\nHarbour Line,09:40,2\n"


def write_corpus(folder: Path) -> dict[str, str]:
    """Write the test corpus (with sidecars) under ``folder``; name -> expected phrase."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "garden.txt").write_text(GARDEN)
    (folder / "volcano.md").write_text(VOLCANO)
    (folder / "bakery.html").write_text(BAKERY)
    (folder / "lighthouse.pdf").write_bytes(pdf_bytes(LIGHTHOUSE))
    (folder / "orbit.docx").write_bytes(docx_bytes(ORBIT))
    (folder / "trains.csv").write_text(TRAINS)
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not really a pdf\n")
    sidecars = {
        "garden.txt": {"topic": "gardening", "year": 2021, "tags": ["outdoor", "community"]},
        "volcano.md": {"topic": "geology", "year": 1996, "tags": ["nature", "danger"]},
        "bakery.html": {"topic": "food", "year": 2023, "tags": ["indoor"]},
        "lighthouse.pdf": {
            "topic": {"value": {"type": "STRING", "stringValue": "history"}},
            "year": {"value": {"type": "NUMBER", "numberValue": 1871}},
        },
    }
    for name, attrs in sidecars.items():
        (folder / f"{name}.metadata.json").write_text(json.dumps({"metadataAttributes": attrs}))
    return {
        "garden.txt": "4417",
        "volcano.md": "1996",
        "bakery.html": "thirty hours",
        "lighthouse.pdf": "Agnes Wobble",
        "orbit.docx": "ninety-two minutes",
        "trains.csv": "Northern Express",
    }
