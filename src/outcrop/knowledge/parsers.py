"""Document bytes -> plain text, by file type.

Bedrock Knowledge Bases read .txt, .md, .html, .csv, .pdf, .doc(x), .xls(x). Here: .txt,
.md, .html/.htm, .csv, .pdf (the text layer, via pypdf) and .docx (python-docx). A file
that cannot be read raises :class:`DocumentError` with a reason a user can act on; the
ingestion counts it as failed and goes on with the rest.
"""

from __future__ import annotations

import csv
import io
import re
from html.parser import HTMLParser
from pathlib import PurePosixPath

MAX_DOCUMENT_BYTES = 50 * 1024 * 1024  # Bedrock's per-file limit

TEXT_TYPES = {".txt": "text/plain", ".md": "text/markdown", ".markdown": "text/markdown"}
SUPPORTED = (".txt", ".md", ".markdown", ".html", ".htm", ".csv", ".pdf", ".docx")
MIME_EXTENSIONS = {
    "text/plain": ".txt",
    "text/markdown": ".md",
    "text/html": ".html",
    "text/csv": ".csv",
    "application/pdf": ".pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
}


class DocumentError(Exception):
    """A document that cannot be ingested; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def extension(name: str) -> str:
    return PurePosixPath(name).suffix.lower()


def is_supported(name: str) -> bool:
    return extension(name) in SUPPORTED


def parse(name: str, data: bytes) -> str:
    """The text of document ``name`` (its extension picks the parser)."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise DocumentError(f"The file is larger than {MAX_DOCUMENT_BYTES // 2**20} MB.")
    ext = extension(name)
    if ext in TEXT_TYPES:
        text = _decode(data)
    elif ext in (".html", ".htm"):
        text = html_text(_decode(data))
    elif ext == ".csv":
        text = csv_text(_decode(data))
    elif ext == ".pdf":
        text = pdf_text(data)
    elif ext == ".docx":
        text = docx_text(data)
    else:
        raise DocumentError(
            f"Unsupported file type {ext or '(none)'}; supported: {', '.join(SUPPORTED)}."
        )
    text = _tidy(text)
    if not text:
        raise DocumentError("The document has no text to index.")
    return text


def _decode(data: bytes) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentError(f"The file is not UTF-8 text (byte {exc.start}).") from None


def _tidy(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = re.sub(r"[ \t\f\v]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


class _HtmlText(HTMLParser):
    """Visible text of an HTML page; block elements become line breaks."""

    _SKIP = {"script", "style", "noscript", "template", "head"}
    _BLOCK = {
        "p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section",
        "article", "header", "footer", "pre", "blockquote", "table", "ul", "ol", "title",
    }  # fmt: skip

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs) -> None:  # noqa: ANN001
        if tag == "title":
            self._in_title = True
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        if tag in self._SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        if not self._skipping:
            self.parts.append(re.sub(r"\s+", " ", data))


def html_text(html: str) -> str:
    parser = _HtmlText()
    parser.feed(html)
    parser.close()
    body = "".join(parser.parts)
    body = "\n".join(line.strip() for line in body.split("\n"))
    title = parser.title.strip()
    if title and not body.lstrip().startswith(title):
        body = f"{title}\n\n{body}"
    return body


def csv_text(text: str) -> str:
    """One line per row, ``header: value`` pairs, so a row reads as a sentence."""
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:
        raise DocumentError(f"The CSV file cannot be read: {exc}.") from None
    if not rows:
        return ""
    header, body = rows[0], rows[1:]
    if not body:
        return ", ".join(header)
    lines = []
    for row in body:
        pairs = [f"{h}: {v}" for h, v in zip(header, row, strict=False) if v.strip()]
        lines.append("; ".join(pairs))
    return "\n".join(lines)


def pdf_text(data: bytes) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            raise DocumentError("The PDF is encrypted.")
        pages = [page.extract_text() or "" for page in reader.pages]
    except DocumentError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, OSError, AttributeError) as exc:
        raise DocumentError(f"The PDF cannot be read: {exc}".rstrip(".") + ".") from None
    return "\n\n".join(p.strip() for p in pages)


def docx_text(data: bytes) -> str:
    import zipfile

    from docx import Document
    from docx.opc.exceptions import PackageNotFoundError

    try:
        doc = Document(io.BytesIO(data))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise DocumentError(f"The .docx file cannot be read: {exc}".rstrip(".") + ".") from None
    parts = [p.text for p in doc.paragraphs]
    for table in doc.tables:
        for row in table.rows:
            parts.append(" | ".join(cell.text.strip() for cell in row.cells))
    return "\n".join(parts)
