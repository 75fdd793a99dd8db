"""Fuzz campaign for ``ragline ingest``: malformed files of every supported format,
in batches mixed with good files, run through the real command line under time
and memory caps.

Why a campaign and not a test: each batch costs a CLI start, a model load and
seconds to minutes of parsing; a run of 10,000 files takes about an hour. It is
seeded and rerunnable, and the results file says what broke, where and how much.

Per batch (a fresh ``RAGLINE_HOME``, the batch's files in one folder):

1. ``ragline ingest DIR --json`` under a wall-time cap and a memory cap (the
   peak RSS of the whole process tree, sampled by a psutil watchdog that kills
   the tree when a cap is hit);
2. ``ragline query x --mode dense -k 1000000 --json``: lists every stored chunk
   (a flat dense search ranks all rows), so every file is classed as indexed
   (it has chunks), failed (in the report's ``failed``) or unreported (neither);
3. ``ragline status --json`` (stored counts against the listing) and one
   ``ragline query MARKER --mode sparse --json`` for a good file's marker.

Good files (about one in ten, every format, each with a unique marker word) are
indexed alone in a clean home (ten batches' worth at a time); their chunks there are
what they must have in every batch, so a good file with fewer chunks lost some,
with more chunks has duplicates. Bad files that carry ``expect`` words must keep
them when indexed (content silently lost otherwise); ``forbid`` words (the text
of a file outside the folder) must never be indexed.

Run: ``nice -n 10 .venv/bin/python bench/fuzz_ingest.py [--quick] [--files N]``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import psutil

ROOT = Path(__file__).resolve().parents[1]
RAGLINE = ROOT / ".venv" / "bin" / "ragline"
KB, MB = 1024, 1024 * 1024


# ------------------------------------------------------------------------------ capped process runs
@dataclass
class RunResult:
    """One CLI run: exit code (None when the watchdog killed it), output, seconds, peak RSS of the
    process tree, which cap was hit, and the files the tree held open when it was killed."""

    rc: int | None
    stdout: bytes
    stderr: bytes
    seconds: float
    peak_rss: int
    cap: str | None = None  # "time" | "memory" | None
    open_files: list[str] = field(default_factory=list)
    leftover: int = 0  # processes of the tree still alive after the main one exited
    cpu_s: float = 0.0  # CPU seconds of the tree (user + system), as last sampled

    @property
    def crashed(self) -> bool:
        """A traceback or an exit code other than 0 (ok) and 1 (some files failed)."""
        return self.cap is None and (self.rc not in (0, 1) or b"Traceback (most recent call last)" in self.stderr)

    def json(self) -> dict | None:
        try:
            return json.loads(self.stdout.decode("utf-8", "surrogateescape"))
        except ValueError:
            return None


def _tree(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return [proc]


def _fd_targets(procs: list[psutil.Process]) -> list[str]:
    """What the tree has open (read from /proc: also FIFOs and devices, which psutil.open_files skips)."""
    seen: list[str] = []
    for p in procs:
        try:
            fds = os.listdir(f"/proc/{p.pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{p.pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith(("socket:", "pipe:", "anon_inode:", "/dev/pts", "/dev/null")) or "/.venv/" in target:
                continue
            if target not in seen:
                seen.append(target)
    return seen


def _limit_child() -> None:
    os.setsid()  # its own process group: the watchdog kills the whole tree at once
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run_capped(args: list[str], env: dict[str, str], wall_s: float, mem_bytes: int, period: float = 0.1,
               cpu_cap: bool = False) -> RunResult:
    """Run ``args`` under a wall-time cap and a cap on the summed RSS of its process tree.

    With ``cpu_cap`` the time cap counts the tree's CPU seconds instead (fair on a machine
    shared with other load), with a wall-time backstop of three times the cap.

    The watchdog samples every ``period`` seconds; on a cap it records what the tree holds
    open and kills the process group with SIGKILL. Output goes to temporary files, so a
    large ``--json`` answer never blocks on a pipe."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                preexec_fn=_limit_child, cwd=str(ROOT))
        ps = psutil.Process(proc.pid)
        peak, cap, opened = 0, None, []
        cpu: dict[int, float] = {}
        while True:
            if proc.poll() is not None:
                break
            tree = _tree(ps)
            rss = 0
            for p in tree:
                try:
                    rss += p.memory_info().rss
                    t = p.cpu_times()
                    cpu[p.pid] = t.user + t.system + t.children_user + t.children_system
                except psutil.Error:
                    pass
            peak = max(peak, rss)
            elapsed = time.perf_counter() - t0
            over_time = (sum(cpu.values()) > wall_s or elapsed > 3 * wall_s) if cpu_cap else elapsed > wall_s
            if rss > mem_bytes or over_time:
                cap = "memory" if rss > mem_bytes else "time"
                opened = _fd_targets(tree)
                if cap == "time":  # PYTHONFAULTHANDLER: SIGABRT makes each Python process print its stacks
                    for p in tree:
                        try:
                            p.send_signal(signal.SIGABRT)
                        except psutil.Error:
                            pass
                    try:
                        proc.wait(timeout=2.0)
                    except subprocess.TimeoutExpired:
                        pass
                _kill_group(proc.pid)
                proc.wait()
                break
            time.sleep(period)
        seconds = time.perf_counter() - t0
        leftover = _group_alive(proc.pid)
        if leftover:  # give workers a moment to exit on their own before counting them as left behind
            time.sleep(1.0)
            leftover = _group_alive(proc.pid)
            _kill_group(proc.pid)
        out.seek(0)
        err.seek(0)
        return RunResult(None if cap else proc.returncode, out.read(), err.read(), seconds, peak, cap, opened,
                         leftover, sum(cpu.values()))


def _group_alive(pgid: int) -> int:
    """Live (not zombie) processes still in the group the CLI run started."""
    n = 0
    for p in psutil.process_iter(["pid", "status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and _pgid(p.pid) == pgid:
                n += 1
        except psutil.Error:
            pass
    return n


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass


def cli_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGLINE_")}
    env.update({"RAGLINE_HOME": str(home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1", "COLUMNS": "200"})
    return env


def list_chunks(home: Path, wall_s: float, mem_bytes: int) -> tuple[list[dict] | None, RunResult]:
    """Every stored chunk, through the CLI: a dense search with k above the row count ranks all rows
    (below ``ann_min_rows`` the search is exact). None when the listing itself failed; an empty
    list when there is no index yet."""
    r = run_capped([str(RAGLINE), "query", "x", "--mode", "dense", "-k", "1000000", "--json"],
                   cli_env(home), wall_s, mem_bytes)
    data = r.json()
    if data is not None and isinstance(data.get("hits"), list):
        return data["hits"], r
    if r.rc == 2 and b"no index" in r.stderr:
        return [], r
    return None, r


def clean_index(folder: Path, home: Path, wall_s: float, mem_bytes: int) -> tuple[list[dict] | None, RunResult]:
    """Index ``folder`` from scratch in ``home`` and list its chunks (the expected result the
    campaigns compare with), with the ingest run; None chunks, after saying why, when the build
    or the listing failed."""
    r = run_capped([str(RAGLINE), "ingest", str(folder), "--json"], cli_env(home), wall_s, mem_bytes)
    rep = r.json()
    if r.cap or rep is None or rep.get("failed"):
        log(f"clean build failed: rc={r.rc} cap={r.cap} failed={(rep or {}).get('failed')} {tail(r.stderr)}")
        return None, r
    chunks, lr = list_chunks(home, 1200.0, mem_bytes)
    if chunks is None:
        log(f"listing the clean build failed: rc={lr.rc} {tail(lr.stderr)}")
    return chunks, r


def status(home: Path, wall_s: float, mem_bytes: int) -> tuple[dict | None, RunResult]:
    r = run_capped([str(RAGLINE), "status", "--json"], cli_env(home), wall_s, mem_bytes)
    return r.json(), r


def tail(b: bytes, n: int = 1500) -> str:
    return b.decode("utf-8", "replace")[-n:]


_ESCAPED = re.compile(r"\\x([0-9a-f]{2})")


def name_key(s: str | bytes) -> bytes:
    """File names compared as bytes. A name that is not UTF-8 reaches us as a str with surrogate
    escapes, or written ``\\xNN`` by ragline's report and store (no generated name has a backslash)."""
    if isinstance(s, bytes):
        return s
    if "\\x" in s:
        parts = _ESCAPED.split(s)
        return b"".join(bytes([int(p, 16)]) if i % 2 else name_key(p) for i, p in enumerate(parts))
    try:
        return os.fsencode(s)
    except UnicodeError:
        return s.encode("utf-8", "replace")


# ---------------------------------------------------------------------------------------- words
SYL = ["ka", "lo", "mi", "ne", "ru", "ta", "vo", "zi", "pe", "su", "do", "fa", "gu", "hi", "jo", "bel",
       "tor", "vin", "mar", "sol", "quen", "dri", "plo", "wex", "yul"]
WORDS = ("river stone harbor lantern meadow copper signal window orchard basalt ledger canyon beacon "
         "thistle granite pepper violin compass marble saddle timber falcon quarry ribbon ember velvet "
         "anchor barley cobalt ferry glacier hollow juniper kettle lagoon mosaic nectar oyster pylon").split()


def nonce(rng: random.Random, prefix: str) -> str:
    """A made-up word no other file contains (letters only: it survives tokenizers and stemming)."""
    return prefix + "".join(rng.choice(SYL) for _ in range(4)) + "".join(rng.choice("bdfgkmnprstvz") for _ in range(3))


def sentences(rng: random.Random, n: int) -> str:
    out = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(6, 14))]
        out.append(" ".join(words).capitalize() + ".")
    return " ".join(out)


# ------------------------------------------------------------------------------------- builders
def make_pdf(text_lines: list[str]) -> bytes:
    """A valid PDF with these lines (fpdf2)."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_compression(False)
    pdf.add_page()
    pdf.set_font("Helvetica", size=11)
    for line in text_lines:
        pdf.multi_cell(0, 6, line.encode("latin-1", "replace").decode("latin-1"))
        pdf.ln(2)
    return bytes(pdf.output())


def make_docx(paragraphs: list[str], heading: str | None = None) -> bytes:
    """A valid DOCX (python-docx)."""
    import docx

    d = docx.Document()
    if heading:
        d.add_heading(heading, level=1)
    for p in paragraphs:
        d.add_paragraph(p)
    buf = io.BytesIO()
    d.save(buf)
    return buf.getvalue()


W_NS = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
CONTENT_TYPES = ('<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/'
                 'content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
                 'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName='
                 '"/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.'
                 'document.main+xml"/></Types>')
RELS = ('<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/'
        'relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
        'relationships/officeDocument" Target="word/document.xml"/></Relationships>')


def raw_docx(document_xml: bytes | Callable[[zipfile.ZipFile], None], extra: dict[str, bytes] | None = None) -> bytes:
    """A DOCX zip written by hand, for members python-docx would never write. ``document_xml`` may be a
    writer that streams the member (huge uncompressed sizes without holding them in memory)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", CONTENT_TYPES)
        z.writestr("_rels/.rels", RELS)
        if callable(document_xml):
            document_xml(z)
        else:
            z.writestr("word/document.xml", document_xml)
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    return buf.getvalue()


def stream_member(z: zipfile.ZipFile, name: str, head: bytes, body: bytes, repeat: int, foot: bytes) -> None:
    """Write member ``name`` = head + body * repeat + foot, deflated, a megabyte at a time."""
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    per = max(1, MB // max(1, len(body)))
    with z.open(info, "w", force_zip64=True) as f:
        f.write(head)
        left = repeat
        while left > 0:
            n = min(left, per)
            f.write(body * n)
            left -= n
        f.write(foot)


def doc_xml(body: str) -> bytes:
    return f'<?xml version="1.0" encoding="UTF-8"?><w:document {W_NS}><w:body>{body}</w:body></w:document>'.encode()


def para(text: str) -> str:
    return f"<w:p><w:r><w:t>{text}</w:t></w:r></w:p>"


def flip_bits(data: bytes, rng: random.Random, n: int) -> bytes:
    b = bytearray(data)
    for _ in range(n):
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)
    return bytes(b)


# ------------------------------------------------------------------------------------ file specs
@dataclass
class Spec:
    """One entry to create in a batch folder."""

    gen: str
    ext: str
    data: bytes = b""
    kind: str = "file"  # file | fifo | symlink | socket | dir
    target: str = ""  # symlink target
    name: bytes | None = None  # an exact name (odd bytes); else one is made from the batch and index
    expect: list[str] = field(default_factory=list)  # words that must be in its chunks if it is indexed
    forbid: list[str] = field(default_factory=list)  # words that must never be indexed
    extra: list[tuple[bytes, str, str]] = field(default_factory=list)  # more entries: (name, kind, target)
    marker: str | None = None  # good files only


@dataclass
class Sizes:
    big: bool

    def line(self, rng: random.Random) -> int:
        """Length of a huge line: log-uniform 64 KB..2 MB (..20 MB with --big)."""
        hi = 20 * MB if self.big else 2 * MB
        return int(2 ** rng.uniform(16, hi.bit_length() - 1))

    def bomb(self, rng: random.Random) -> int:
        """Uncompressed size of a compression bomb: 16..64 MB (256..512 MB with --big)."""
        return rng.randint(256, 512) * MB if self.big else rng.randint(16, 64) * MB

    def empty_paragraphs(self, rng: random.Random) -> int:
        return 20 * MB if self.big else int(2 ** rng.uniform(18, 21))

    def depth(self, rng: random.Random) -> int:
        return rng.choice([257, 300, 1000, 10_000, 100_000])

    def headings(self, rng: random.Random) -> int:
        return 100_000 if self.big else rng.choice([500, 1000, 2000])


TEXT_EXTS = [".txt", ".md", ".rst", ".log", ".py", ".go", ".js", ".rs", ".c", ".java", ".sql"]
ALL_EXTS = [".pdf", ".docx", ".html", ".htm", ".md", ".txt", ".csv", ".tsv", ".json", ".jsonl", ".py", ".go", ".js"]


def g_pdf_truncated(rng, sz, base):
    data = base["pdf"]
    return Spec("pdf_truncated", ".pdf", data[: rng.randint(1, len(data) - 1)])


def g_pdf_bitflip(rng, sz, base):
    return Spec("pdf_bitflip", ".pdf", flip_bits(base["pdf"], rng, rng.randint(1, 64)))


def g_pdf_broken(rng, sz, base):
    d = base["pdf"]
    how = rng.choice(["no_xref", "bad_startxref", "no_eof", "junk_middle", "bad_length", "bad_root", "no_obj",
                      "only_header", "nested_array", "garbage_after"])
    if how == "no_xref":
        i = d.rfind(b"xref")
        d = d[:i] + d[d.rfind(b"trailer"):] if i > 0 else d
    elif how == "bad_startxref":
        i = d.rfind(b"startxref")
        d = d[:i] + b"startxref\n99999999\n%%EOF\n"
    elif how == "no_eof":
        d = d.replace(b"%%EOF", b"")
    elif how == "junk_middle":
        i = rng.randrange(len(d))
        d = d[:i] + rng.randbytes(rng.randint(1, 4096)) + d[i:]
    elif how == "bad_length":
        d = d.replace(b"/Length ", b"/Length 9999999", 1)
    elif how == "bad_root":
        d = d.replace(b"/Root ", b"/Root 999 ", 1)
    elif how == "no_obj":
        d = d.replace(b"endobj", b"endbj")
    elif how == "only_header":
        d = b"%PDF-1.7\n"
    elif how == "nested_array":
        n = rng.choice([1000, 100_000])
        d = b"%PDF-1.4\n1 0 obj\n" + b"[" * n + b"]" * n + b"\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
    else:
        d = d + rng.randbytes(rng.randint(1, 64 * KB))
    return Spec("pdf_broken", ".pdf", d)


def g_pdf_flate_bomb(rng, sz, base):
    n = sz.bomb(rng)
    comp = zlib.compressobj(9)
    piece = b"BT /F1 12 Tf 72 720 Td (" + b"A" * 4000 + b") Tj ET\n"
    body = b"".join(comp.compress(piece) for _ in range(n // len(piece))) + comp.flush()
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
            b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(body) + body + b"\nendstream",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offs = bytearray(b"%PDF-1.4\n"), []
    for i, o in enumerate(objs, 1):
        offs.append(len(out))
        out += b"%d 0 obj\n" % i + o + b"\nendobj\n"
    x = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    for o in offs:
        out += b"%010d 00000 n \n" % o
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, x)
    return Spec("pdf_flate_bomb", ".pdf", bytes(out))


def g_pdf_junk(rng, sz, base):
    return Spec("pdf_junk", ".pdf", b"%PDF-1.5\n" + rng.randbytes(rng.randint(0, 64 * KB)))


def g_docx_truncated(rng, sz, base):
    d = base["docx"]
    return Spec("docx_truncated", ".docx", d[: rng.randint(1, len(d) - 1)])


def g_docx_bitflip(rng, sz, base):
    return Spec("docx_bitflip", ".docx", flip_bits(base["docx"], rng, rng.randint(1, 32)))


def g_docx_broken(rng, sz, base):
    word = nonce(rng, "dx")
    how = rng.choice(["no_document", "bad_xml", "not_zip", "wrong_ns", "empty_zip", "bad_crc", "dir_member",
                      "deep_xml", "huge_attr", "bad_encoding"])
    if how == "no_document":
        d = raw_docx(lambda z: None)
    elif how == "bad_xml":
        d = raw_docx(doc_xml(para(word))[:-30] + b"<w:p><w:r")
    elif how == "not_zip":
        d = rng.randbytes(rng.randint(0, 8 * KB))
    elif how == "wrong_ns":
        d = raw_docx(b'<?xml version="1.0"?><document><body><p>' + word.encode() + b"</p></body></document>")
    elif how == "empty_zip":
        buf = io.BytesIO()
        zipfile.ZipFile(buf, "w").close()
        d = buf.getvalue()
    elif how == "bad_crc":
        good = raw_docx(doc_xml(para(sentences(rng, 20))))
        i = good.find(b"word/document.xml") + 40
        d = good[:i] + bytes([good[i] ^ 0xFF]) + good[i + 1:]
    elif how == "dir_member":
        d = raw_docx(lambda z: z.writestr(zipfile.ZipInfo("word/document.xml/"), b""))
    elif how == "deep_xml":
        n = sz.depth(rng)
        d = raw_docx(doc_xml("<w:tbl><w:tr><w:tc>" * min(n, 30_000) + para(word) + "</w:tc></w:tr></w:tbl>" * min(n, 30_000)))
    elif how == "huge_attr":
        d = raw_docx(doc_xml(f'<w:p w:rsidR="{"A" * sz.line(rng)}"><w:r><w:t>{word}</w:t></w:r></w:p>'))
    else:
        d = raw_docx(doc_xml(para(word)).replace(b"UTF-8", b"UTF-16"))
    return Spec("docx_broken", ".docx", d)


def g_docx_zip_bomb(rng, sz, base):
    n = sz.bomb(rng)
    word = nonce(rng, "zb")
    if rng.random() < 0.5:  # the document itself: one huge run of text
        def write(z):
            stream_member(z, "word/document.xml", doc_xml("").split(b"</w:body>")[0] + b"<w:p><w:r><w:t>" + word.encode()
                          + b" ", b"lorem ipsum dolor sit amet ", n // 27, b"</w:t></w:r></w:p></w:body></w:document>")
        return Spec("docx_zip_bomb", ".docx", raw_docx(write))
    # a huge media member beside a small valid document
    def write_media(z):
        z.writestr("word/document.xml", doc_xml(para(word)))
        stream_member(z, "word/media/image1.png", b"", b"\0" * 4096, n // 4096, b"")
    return Spec("docx_zip_bomb_media", ".docx", raw_docx(write_media), expect=[word])


def g_docx_empty_paragraphs(rng, sz, base):
    n = sz.empty_paragraphs(rng)
    word = nonce(rng, "ep")

    def write(z):
        stream_member(z, "word/document.xml", doc_xml(para(word)).split(b"</w:body>")[0], b"<w:p/>", n // 6,
                      b"</w:body></w:document>")
    return Spec("docx_empty_paragraphs", ".docx", raw_docx(write))


def g_docx_entities(rng, sz, base):
    if rng.random() < 0.5:
        ents = '<!ENTITY a0 "lol">' + "".join(f'<!ENTITY a{i} "{("&a%d;" % (i - 1)) * 10}">' for i in range(1, 10))
        xml = f'<?xml version="1.0"?><!DOCTYPE lolz [{ents}]><w:document {W_NS}><w:body>{para("&a9;")}</w:body></w:document>'
        return Spec("docx_billion_laughs", ".docx", raw_docx(xml.encode()))
    xml = (f'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><w:document {W_NS}>'
           f'<w:body>{para("&xxe;")}</w:body></w:document>')
    return Spec("docx_xxe", ".docx", raw_docx(xml.encode()), forbid=["root:x:0:0"])


def g_html_deep(rng, sz, base):
    n = sz.depth(rng)
    word = nonce(rng, "hd")
    tag = rng.choice(["div", "ul><li", "b", "span", "blockquote", "table><tr><td"])
    opener = "".join(f"<{t}>" for t in tag.split("><"))
    closer = "".join(f"</{t}>" for t in reversed(tag.split("><")))
    close = rng.random() < 0.5 and tag != "b"
    body = f"<p>{sentences(rng, 2)}</p>" + opener * n + f" {word} " + (closer * n if close else "")
    return Spec("html_deep_" + tag.split(">")[0], ".html", f"<html><body>{body}</body></html>".encode(), expect=[word])


def g_html_after_close(rng, sz, base):
    word = nonce(rng, "ha")
    d = f"<html><head><title>t</title></head><body><p>{sentences(rng, 3)}</p></body></html>\n<p>{word} appended</p>\n"
    return Spec("html_after_close", rng.choice([".html", ".htm"]), d.encode(), expect=[word])


def g_html_huge_node(rng, sz, base):
    word = nonce(rng, "hn")
    n = sz.line(rng)
    where = rng.choice(["text", "attr", "comment", "script"])
    blob = ("x" * n) if rng.random() < 0.5 else sentences(rng, n // 80)
    huge = {"text": f"<p>{blob}</p>", "attr": f'<p title="{blob}">a</p>', "comment": f"<!-- {blob} -->",
            "script": f"<script>var a='{blob}';</script>"}[where]
    d = f"<html><body><h1>Title</h1><p>{word} {sentences(rng, 2)}</p>{huge}</body></html>"
    return Spec("html_huge_" + where, ".html", d.encode(), expect=[word])


def g_html_headings(rng, sz, base):
    n = sz.headings(rng)
    d = "<html><body>" + "".join(f"<h{1 + i % 6}>Heading {i}</h{1 + i % 6}><p>{rng.choice(WORDS)} {i}</p>"
                                 for i in range(n)) + "</body></html>"
    return Spec("html_many_headings", ".html", d.encode())


def g_html_broken(rng, sz, base):
    word = nonce(rng, "hb")
    how = rng.choice(["unclosed_comment", "unclosed_script", "junk", "charset_lie", "only_tags", "cdata", "nul"])
    d = {
        "unclosed_comment": f"<html><body><p>{word}</p><!-- {sentences(rng, 3)}",
        "unclosed_script": f"<html><body><p>{word}</p><script>{sentences(rng, 3)}",
        "junk": "<" + "".join(rng.choice("<>/=\"'&;!-abc ") for _ in range(rng.randint(1, 20000))),
        "charset_lie": f'<html><head><meta charset="utf-16"></head><body><p>{word} ü é 漢字</p></body></html>',
        "only_tags": "<html><body>" + "<br/>" * rng.randint(1, 50000) + "</body></html>",
        "cdata": f"<html><body><![CDATA[ {sentences(rng, 2)} ]]><p>{word}</p></body></html>",
        "nul": f"<html><body><p>{word}</p>\0\0<p>a\0b</p></body></html>",
    }[how]
    return Spec("html_" + how, ".html", d.encode("utf-8"),
                expect=[word] if how in ("unclosed_comment", "unclosed_script", "charset_lie", "cdata", "nul") else [])


def g_json_deep(rng, sz, base):
    n = sz.depth(rng)
    word = nonce(rng, "jd")
    if rng.random() < 0.5:
        d = "[" * n + json.dumps(word) + "]" * n
    else:
        d = '{"a":' * n + json.dumps(word) + "}" * n
    return Spec("json_deep", ".json", d.encode(), expect=[word])


def g_json_surrogate(rng, sz, base):
    word = nonce(rng, "js")
    where = rng.choice(["value", "key", "jsonl"])
    if where == "value":
        d = '{"text": "lone \\ud800 surrogate", "other": "%s"}' % word
    elif where == "key":
        d = '{"lone \\udc00 key": "v", "other": "%s"}' % word
    else:
        d = '{"text": "%s"}\n{"text": "bad \\udfff here"}\n' % word
    return Spec("json_lone_surrogate_" + where, ".jsonl" if where == "jsonl" else ".json", d.encode(), expect=[word])


def g_json_broken(rng, sz, base):
    word = nonce(rng, "jb")
    how = rng.choice(["truncated", "garbage", "nan", "bigint", "huge_key", "dup_keys", "bom", "jsonl_mixed",
                      "huge_string", "many_keys"])
    ext = ".json"
    if how == "truncated":
        d = json.dumps({"a": [sentences(rng, 3)] * 5})[: rng.randint(1, 200)]
    elif how == "garbage":
        d = "".join(rng.choice('{}[]:,"\\ ' + "abc123") for _ in range(rng.randint(1, 5000)))
    elif how == "nan":
        d = '{"a": NaN, "b": Infinity, "c": -Infinity, "d": 1e99999, "w": "%s"}' % word
    elif how == "bigint":
        d = '{"n": %s, "w": "%s"}' % ("9" * rng.choice([4301, 100_000]), word)
    elif how == "huge_key":
        d = '{"%s": "v", "w": "%s"}' % ("k" * sz.line(rng), word)
    elif how == "dup_keys":
        d = '{"a": "1", "a": "%s"}' % word
    elif how == "bom":
        d = '\ufeff{"w": "%s"}' % word
    elif how == "jsonl_mixed":
        ext = ".jsonl"
        d = '{"w": "%s"}\nnot json\n{"x": [1,2\n\n{"y": "z"}\n' % word
    elif how == "huge_string":
        d = json.dumps({"w": word, "s": sentences(rng, sz.line(rng) // 80)})
    else:
        d = json.dumps({f"k{i}": i for i in range(rng.choice([10_000, 100_000]))} | {"w": word})
    keep = how in ("nan", "dup_keys", "bom", "huge_key", "huge_string", "many_keys", "bigint")
    return Spec("json_" + how, ext, d.encode("utf-8"), expect=[word] if keep else [])


def g_csv_huge_line(rng, sz, base):
    n = sz.line(rng)
    lines = rng.choice([1, 2])
    sep = rng.choice([",", "\t", " "])
    row = lambda: sep.join(rng.choice(WORDS) for _ in range(n // 7 // lines))  # noqa: E731
    d = "\n".join(row() for _ in range(lines))
    return Spec("csv_huge_line", rng.choice([".csv", ".tsv"]), d.encode())


def g_csv_broken(rng, sz, base):
    word = nonce(rng, "cb")
    how = rng.choice(["unterminated_quote", "nul", "ragged", "many_columns", "only_header", "binary", "cr_only"])
    d = {
        "unterminated_quote": f'a,b\n"{sentences(rng, 3)},{word}\n1,2\n',
        "nul": f"a,b\n{word},\0x\0\n1,2\n",
        "ragged": f"a,b,c\n1\n2,3,4,5,6\n{word}\n" + ",".join("x" * 10 for _ in range(500)) + "\n",
        "many_columns": ",".join(f"c{i}" for i in range(rng.choice([10_000, 100_000]))) + f"\n{word}\n",
        "only_header": "a,b,c\n",
        "binary": rng.randbytes(rng.randint(1, 8 * KB)).decode("latin-1"),
        "cr_only": f"a,b\r{word},2\r3,4\r",
    }[how]
    keep = how in ("nul", "ragged", "many_columns", "cr_only", "unterminated_quote")
    return Spec("csv_" + how, ".csv", d.encode("latin-1" if how == "binary" else "utf-8"), expect=[word] if keep else [])


def g_text_huge_line(rng, sz, base):
    n = sz.line(rng)
    d = " ".join(rng.choice(WORDS) for _ in range(n // 7))
    return Spec("text_huge_line", rng.choice(TEXT_EXTS), d.encode())


def g_overlong_word(rng, sz, base):
    word = nonce(rng, "ow")
    n = sz.line(rng)
    ext = rng.choice([".txt", ".md", ".json", ".go", ".csv", ".html"])
    blob = "".join(rng.choice("abcdefghij") for _ in range(1000)) * (n // 1000)
    d = {".json": json.dumps({blob: word}), ".html": f"<p>{word}</p><p>{blob}</p>",
         ".go": f'package main\n// {word}\nvar s = "{blob}"\n'}.get(ext, f"{word} start\n{blob}\nend\n")
    return Spec("overlong_word", ext, d.encode(), expect=[word])


def g_text_bytes(rng, sz, base):
    word = nonce(rng, "tb")
    how = rng.choice(["nul", "mixed_encodings", "invalid_utf8", "binary", "utf16", "utf16_no_bom", "bom_only",
                      "control_chars", "crlf_mix"])
    ext = rng.choice(TEXT_EXTS)
    s = sentences(rng, 4)
    d = {
        "nul": f"{word} {s}".encode().replace(b" ", b"\0", 3) + b"\0" * rng.randint(1, 1000),
        "mixed_encodings": f"{word} utf8 é 漢字 ".encode() + "latin1 é ü ".encode("latin-1") + "cp1252 “q” €".encode("cp1252")
        + "utf16 text".encode("utf-16"),
        "invalid_utf8": f"{word} ".encode() + bytes(rng.randrange(128, 256) for _ in range(rng.randint(1, 4000))),
        "binary": rng.randbytes(rng.randint(1, 64 * KB)),
        "utf16": f"{word} {s}".encode("utf-16"),
        "utf16_no_bom": f"{word} {s}".encode("utf-16-le"),
        "bom_only": b"\xef\xbb\xbf",
        "control_chars": f"{word} ".encode() + bytes(rng.randrange(0, 32) for _ in range(2000)),
        "crlf_mix": f"{word}\r\n{s}\r{s}\n\r".encode(),
    }[how]
    keep = how in ("nul", "mixed_encodings", "invalid_utf8", "utf16", "control_chars", "crlf_mix")
    return Spec("text_" + how, ext, d, expect=[word] if keep else [])


def g_markdown(rng, sz, base):
    word = nonce(rng, "md")
    how = rng.choice(["deep_quote", "deep_list", "huge_heading", "unclosed_fence", "front_matter", "many_headings",
                      "link_refs"])
    n = sz.depth(rng)
    d = {
        "deep_quote": ">" * n + f" {word}\n",
        "deep_list": "".join("  " * i + f"- item {i}\n" for i in range(min(n, 5000))) + f"\n{word}\n",
        "huge_heading": "# " + "heading " * (sz.line(rng) // 8) + f"\n\n{word}\n",
        "unclosed_fence": f"{word}\n\n```python\n" + sentences(rng, 10),
        "front_matter": f"---\ntitle: [unclosed\n: : :\n---\n{word} {sentences(rng, 2)}\n",
        "many_headings": "".join(f"{'#' * (1 + i % 6)} H{i}\n\ntext {i}\n\n" for i in range(sz.headings(rng))) + word,
        "link_refs": "".join(f"[a{i}]: http://x/{i}\n" for i in range(20000)) + f"\n{word}\n",
    }[how]
    keep = how in ("deep_list", "huge_heading", "unclosed_fence", "front_matter", "many_headings", "link_refs", "deep_quote")
    return Spec("md_" + how, ".md", d.encode(), expect=[word] if keep else [])


def g_code(rng, sz, base):
    word = nonce(rng, "cd")
    how = rng.choice(["huge_line", "deep_parens", "junk", "unterminated", "many_functions"])
    ext = rng.choice([".py", ".go", ".js", ".rs", ".c", ".java", ".ts", ".rb"])
    n = sz.depth(rng)
    d = {
        "huge_line": f"// {word}\nx = [" + ",".join(str(i) for i in range(sz.line(rng) // 7)) + "]\n",
        "deep_parens": f"// {word}\nx = " + "(" * n + "1" + ")" * n + "\n",
        "junk": f"// {word}\n" + "".join(rng.choice("{}()[];:'\"\\/*#\n\t abc") for _ in range(rng.randint(1, 20000))),
        "unterminated": f"// {word}\n/* " + sentences(rng, 5) + '\n"unterminated string\n',
        "many_functions": f"// {word}\n" + "".join(f"def f{i}():\n    return {i}\n\n" for i in range(2000)),
    }[how]
    return Spec("code_" + how, ext, d.encode(), expect=[word] if how != "junk" else [])


def g_empty(rng, sz, base):
    ext = rng.choice(ALL_EXTS)
    d = rng.choice([b"", b" ", b"\n\n\n", b"\t \r\n", b"\xef\xbb\xbf", b"\0"])
    return Spec("empty", ext, d)


def g_odd_name(rng, sz, base):
    word = nonce(rng, "on")
    ext = rng.choice([".txt", ".md", ".json", ".csv"])
    how = rng.choice(["invalid_utf8", "len255", "len255_multibyte", "newline", "dash", "unicode", "quotes"])
    tag = nonce(rng, "").encode()
    stem = {
        "invalid_utf8": b"bad_\xff\xfe_" + tag,
        "len255": tag + b"n" * (255 - len(ext) - len(tag)),  # the tag keeps two such names apart
        "len255_multibyte": tag + ("é" * ((255 - len(ext) - len(tag)) // 2)).encode() + b"x" * ((255 - len(ext) - len(tag)) % 2),
        "newline": b"new\nline_" + tag,
        "dash": b"-rf " + tag,
        "unicode": "e\u0301\u202e\u200b漢字_".encode() + tag,
        "quotes": b"q'\"`$(x)_" + tag,
    }[how]
    data = {".json": json.dumps({"w": word}), ".csv": f"a,b\n{word},1\n"}.get(ext, f"{word} {sentences(rng, 2)}")
    return Spec("name_" + how, ext, data.encode(), name=stem + ext.encode(), expect=[word])


def g_special(rng, sz, base):
    how = rng.choice(["fifo", "dev_zero", "dev_urandom", "dev_null", "outside", "loop", "self_loop", "dangling",
                      "socket", "dir_named_like_file", "dir_loop"])
    ext = rng.choice([".txt", ".md", ".csv", ".json"])
    if how == "fifo":
        return Spec("fifo", ext, kind="fifo")
    if how in ("dev_zero", "dev_urandom", "dev_null"):
        return Spec("symlink_" + how, ext, kind="symlink", target="/dev/" + how[4:])
    if how == "outside":
        secret = nonce(rng, "secret")
        return Spec("symlink_outside", ext, kind="symlink", target=f"@OUTSIDE@{secret}", forbid=[secret])
    if how == "loop":
        return Spec("symlink_loop", ext, kind="symlink", target="@LOOP@")
    if how == "self_loop":
        return Spec("symlink_self_loop", ext, kind="symlink", target="@SELF@")
    if how == "dangling":
        return Spec("symlink_dangling", ext, kind="symlink", target="/nonexistent/nowhere" + ext)
    if how == "socket":
        return Spec("socket", ext, kind="socket")
    if how == "dir_loop":
        return Spec("symlink_dir_loop", "", kind="symlink", target=".")
    return Spec("dir_named_like_file", ext, kind="dir")


# (generator, weight): weights keep the slow or dangerous kinds rare enough that most batches say
# something about the cheap ones too
GENERATORS: list[tuple[Callable, int]] = [
    (g_pdf_truncated, 4), (g_pdf_bitflip, 4), (g_pdf_broken, 4), (g_pdf_flate_bomb, 1), (g_pdf_junk, 2),
    (g_docx_truncated, 4), (g_docx_bitflip, 4), (g_docx_broken, 4), (g_docx_zip_bomb, 1),
    (g_docx_empty_paragraphs, 1), (g_docx_entities, 2),
    (g_html_deep, 3), (g_html_after_close, 2), (g_html_huge_node, 1), (g_html_headings, 1), (g_html_broken, 4),
    (g_json_deep, 3), (g_json_surrogate, 2), (g_json_broken, 5),
    (g_csv_huge_line, 1), (g_csv_broken, 4),
    (g_text_huge_line, 1), (g_overlong_word, 2), (g_text_bytes, 6), (g_markdown, 4), (g_code, 4),
    (g_empty, 4), (g_odd_name, 4), (g_special, 4),
]


def good_spec(rng: random.Random, i: int) -> Spec:
    """A valid file of some format whose text holds a unique marker word."""
    marker = nonce(rng, "gm")
    fmt = ALL_EXTS[i % len(ALL_EXTS)]
    s1, s2 = sentences(rng, 3), sentences(rng, 3)
    if fmt == ".pdf":
        data = make_pdf([s1, f"The marker word is {marker}.", s2])
    elif fmt == ".docx":
        data = make_docx([s1, f"The marker word is {marker}.", s2], heading="Report")
    elif fmt in (".html", ".htm"):
        data = f"<html><head><title>Page</title></head><body><h1>Notes</h1><p>{s1}</p><p>The marker word is {marker}.</p><p>{s2}</p></body></html>".encode()
    elif fmt == ".md":
        data = f"# Notes\n\n{s1}\n\nThe marker word is {marker}.\n\n## More\n\n{s2}\n".encode()
    elif fmt == ".csv":
        data = f"name,description\nalpha,{s1}\nmarker,The marker word is {marker}.\n".encode()
    elif fmt == ".tsv":
        data = f"name\tdescription\nalpha\t{s1}\nmarker\tThe marker word is {marker}.\n".encode()
    elif fmt == ".json":
        data = json.dumps({"title": "Notes", "body": s1, "marker": f"The marker word is {marker}."}).encode()
    elif fmt == ".jsonl":
        data = (json.dumps({"text": s1}) + "\n" + json.dumps({"text": f"The marker word is {marker}."}) + "\n").encode()
    elif fmt in (".py", ".go", ".js"):
        c = "#" if fmt == ".py" else "//"
        body = {"py": "def area(r):\n    return 3.14159 * r * r\n", "go": "package main\n\nfunc area(r float64) float64 { return 3.14 * r * r }\n",
                "js": "function area(r) { return 3.14 * r * r; }\n"}[fmt[1:]]
        data = f"{c} {s1}\n{c} The marker word is {marker}.\n{body}".encode()
    else:
        data = f"{s1}\n\nThe marker word is {marker}.\n\n{s2}\n".encode()
    return Spec("good", fmt, data, marker=marker, expect=[marker])


# -------------------------------------------------------------------------------------- batches
def materialise(spec: Spec, folder: Path, name: bytes, outside: Path) -> list[bytes]:
    """Create ``spec`` as ``name`` in ``folder``; returns the names of every entry it made there."""
    fb = os.fsencode(folder)
    path = os.path.join(fb, name)
    if spec.kind == "file":
        with open(path, "wb") as f:
            f.write(spec.data)
    elif spec.kind == "fifo":
        os.mkfifo(path)
    elif spec.kind == "socket":
        s = socket.socket(socket.AF_UNIX)
        try:
            s.bind(path)
        except OSError:  # the path is too long for a socket address: bind in place, then move
            short = os.path.join(os.fsencode(tempfile.gettempdir()), b"rl_fuzz_%d" % os.getpid())
            s.bind(short)
            os.rename(short, path)
        s.close()
    elif spec.kind == "dir":
        os.mkdir(path)
        with open(os.path.join(path, b"inner.txt"), "wb") as f:
            f.write(b"inner file of a folder named like a file\n")
        return [name, os.path.join(name, b"inner.txt")]
    elif spec.kind == "symlink":
        t = spec.target
        if t.startswith("@OUTSIDE@"):
            secret = t[len("@OUTSIDE@"):]
            target = outside / f"{secret}.txt"
            target.write_text(f"outside the folder: {secret} must not be indexed\n")
            os.symlink(os.fsencode(target), path)
        elif t == "@LOOP@":
            other = name + b".b" + os.path.splitext(name)[1]
            os.symlink(other, path)
            os.symlink(name, os.path.join(fb, other))
            return [name, other]
        elif t == "@SELF@":
            os.symlink(name, path)
        else:
            os.symlink(t, path)
    return [name]


@dataclass
class Entry:
    name: bytes
    gen: str
    spec: Spec
    good: bool


def classify(entries: list[Entry], folder: Path, report: dict | None, chunks: list[dict] | None) -> dict:
    """Each entry indexed, failed or unreported; content and chunk checks per file."""
    prefix = name_key(str(folder)) + b"/"
    failed: dict[bytes, str] = {}
    for f in (report or {}).get("failed", []):
        k = name_key(f.get("path", ""))
        failed[k[len(prefix):] if k.startswith(prefix) else k] = f.get("reason", "")
    by_source: dict[bytes, list[dict]] = defaultdict(list)
    for c in chunks or []:
        k = name_key(c.get("source", ""))
        by_source[k[len(prefix):] if k.startswith(prefix) else k].append(c)
    out = {}
    for e in entries:
        cs = by_source.get(e.name, [])
        out[e.name] = {"indexed": bool(cs), "failed": failed.get(e.name), "chunks": cs}
    known = {e.name for e in entries}
    out_extra = {k: v for k, v in by_source.items() if k not in known}
    return {"files": out, "failed_extra": {k: v for k, v in failed.items() if k not in known}, "sources_extra": out_extra}


def supported(name: bytes) -> bool:
    from_ext = os.path.splitext(name)[1].lower().decode("utf-8", "replace")
    return from_ext in SUPPORTED and not os.path.basename(name).startswith(b".")


SUPPORTED: set[str] = set()


def load_supported() -> None:
    """The extensions ragline reads, from its own table (so the campaign follows the code)."""
    r = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-c",
                        "import json; from ragline.ingest.parsers import SUPPORTED_EXTENSIONS as S; print(json.dumps(sorted(S)))"],
                       capture_output=True, text=True, check=True, cwd=str(ROOT))
    SUPPORTED.update(json.loads(r.stdout))


def chunk_key(c: dict) -> tuple:
    return (c.get("text", ""), tuple(c.get("span") or ()), c.get("page"), tuple(c.get("heading_path") or ()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=10_000, help="malformed files in all (default 10,000)")
    ap.add_argument("--batch-size", type=int, default=100, help="malformed files per batch (default 100)")
    ap.add_argument("--good-per-batch", type=int, default=None, help="good files per batch (default: a tenth, at least 2)")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--start-batch", type=int, default=0, help="skip the batches before this one (to rerun one)")
    ap.add_argument("--quick", action="store_true", help="a pilot: 300 files in batches of 25")
    ap.add_argument("--heavy-per-batch", type=int, default=1,
                    help="files over 256 KB that may index into thousands of chunks, per batch (default 1)")
    ap.add_argument("--big", action="store_true", help="the issue's sizes: 20 MB lines, 256-512 MB bombs, 20 MB of <w:p/>")
    ap.add_argument("--wall", type=float, default=120.0, help="seconds per ingest run (default 120)")
    ap.add_argument("--cpu-cap", action="store_true",
                    help="count --wall in CPU seconds of the process tree, not wall seconds (for a loaded machine)")
    ap.add_argument("--mem-gb", type=float, default=6.0, help="peak RSS of the process tree per run (default 6)")
    ap.add_argument("--max-seconds", type=float, default=None, help="start no new batch after this many seconds")
    ap.add_argument("--output", type=Path, default=None, help="results JSON (default bench/results/fuzz-ingest-<date>.json)")
    ap.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a new one under /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep batch folders and homes that showed a problem")
    args = ap.parse_args(argv)
    if args.quick:
        args.files = min(args.files, 300) if "--files" in (argv or sys.argv) else 300
        args.batch_size = 25 if "--batch-size" not in (argv or sys.argv) else args.batch_size
    good_n = args.good_per_batch if args.good_per_batch is not None else max(2, args.batch_size // 10)
    mem = int(args.mem_gb * 2**30)
    load_supported()
    out_path = args.output or ROOT / "bench" / "results" / f"fuzz-ingest-{time.strftime('%Y-%m-%d-%H%M')}.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ragline-fuzz-", dir=args.workdir)).resolve()
    outside = work / "outside"
    outside.mkdir()
    t_start = time.perf_counter()
    rng = random.Random(args.seed)
    sz = Sizes(args.big)
    n_batches = -(-args.files // args.batch_size)

    base = {"pdf": make_pdf([sentences(rng, 4), sentences(rng, 4)]),
            "docx": make_docx([sentences(rng, 3) for _ in range(4)], heading="Base")}

    # good files: indexed alone in a clean home (ten batches' worth at a time, when first needed),
    # for the chunks each must have in every batch
    goods = [good_spec(random.Random(args.seed * 1_000_003 + i), i) for i in range(n_batches * good_n)]
    expected: dict[str, Counter] = defaultdict(Counter)
    clean_info: dict = {"files": 0, "chunks": 0, "seconds": 0.0, "peak_rss_mb": 0}

    gens, weights = zip(*GENERATORS)
    batches: list[dict] = []
    per_gen: dict[str, Counter] = defaultdict(Counter)
    problems: list[dict] = []
    totals = Counter()
    made = min(args.files, args.start_batch * args.batch_size)
    for b in range(args.start_batch, n_batches):
        if args.max_seconds and time.perf_counter() - t_start > args.max_seconds:
            log(f"time budget reached after {b} batches")
            break
        if good_n and f"good_{b * good_n:05d}{goods[b * good_n].ext}" not in expected:
            block = range(b * good_n, min(len(goods), (b + CLEAN_BLOCK) * good_n))
            if not clean_build(goods, block, work, mem, expected, clean_info):
                return 2
        brng = random.Random(f"{args.seed}:{b}")
        folder = work / f"batch_{b:05d}"
        folder.mkdir()
        entries: list[Entry] = []
        n_bad = min(args.batch_size, args.files - made)
        specs: list[Spec] = []
        heavy = 0
        for _ in range(n_bad):
            for _try in range(50):
                spec = brng.choices(gens, weights)[0](brng, sz, base)
                if not is_heavy(spec) or heavy < args.heavy_per_batch:
                    break
            heavy += is_heavy(spec)
            specs.append(spec)
        made += n_bad
        for j in range(good_n):
            gi = b * good_n + j
            specs.insert(brng.randrange(len(specs) + 1), Spec("good", goods[gi].ext, goods[gi].data,
                                                              marker=goods[gi].marker, expect=goods[gi].expect,
                                                              name=f"good_{gi:05d}{goods[gi].ext}".encode()))
        for i, s in enumerate(specs):
            name = s.name or f"b{b:05d}_{i:03d}_{s.gen}{s.ext}".encode()
            if os.path.lexists(os.path.join(os.fsencode(folder), name)):  # never let one entry replace another
                continue
            try:
                names = materialise(s, folder, name, outside)
            except OSError as exc:
                log(f"could not create {name!r}: {exc}")
                continue
            entries.append(Entry(names[0], s.gen, s, s.gen == "good"))
            for extra in names[1:]:
                entries.append(Entry(extra, s.gen + "(companion)", Spec(s.gen, ""), False))
        home = work / f"home_{b:05d}"
        r = run_capped([str(RAGLINE), "ingest", str(folder), "--json"], cli_env(home), args.wall, mem,
                       cpu_cap=args.cpu_cap)
        report = r.json()
        chunks, lr = list_chunks(home, args.wall, mem)
        st, sr = status(home, args.wall, mem)
        res = classify(entries, folder, report, chunks)
        row = check_batch(b, entries, res, r, report, chunks, lr, st, sr, expected, problems)
        # one sparse query for a good marker, the way a user would look a word up
        good_entries = [e for e in entries if e.good]
        if good_entries and chunks is not None and (home / "lance").exists():
            e = brng.choice(good_entries)
            q = run_capped([str(RAGLINE), "query", e.spec.marker, "--mode", "sparse", "--json", "-k", "3"],
                           cli_env(home), args.wall, mem)
            hits = (q.json() or {}).get("hits")
            found = bool(hits) and name_key(hits[0].get("source", "")).endswith(b"/" + e.name)
            row["sparse_query"] = {"marker_file": e.name.decode(), "rank1": found, "rc": q.rc,
                                   "error": None if hits is not None else tail(q.stderr, 300)}
            if hits is None:
                row["query_errors"] += 1
            elif not found and row["checks"]["indexed_good"] == row["checks"]["good"]:
                row["sparse_marker_miss"] = 1
        for e in entries:
            f = res["files"][e.name]
            per_gen[e.gen]["files"] += 1
            per_gen[e.gen]["indexed" if f["indexed"] else "failed" if f["failed"] is not None
                           else "no_report" if report is None
                           else "unreported" if supported(e.name) and e.spec.kind != "dir"
                           else "not_a_supported_file"] += 1
        if row["crash"] or row["cap"]:
            for g in {e.gen for e in entries if not e.good}:
                per_gen[g]["in_crashed_or_capped_batch"] += 1
        batches.append(row)
        for k in ("crash", "hang", "memory_cap", "unreported", "good_not_indexed", "duplicated_chunks",
                  "lost_chunks", "content_lost", "outside_indexed", "oversized_chunks", "query_errors",
                  "count_mismatch", "leftover_processes", "sparse_marker_miss"):
            totals[k] += int(row.get(k, 0) or 0)
        totals["batches"] += 1
        totals["bad_files"] += n_bad
        totals["good_files"] += good_n
        bad_batch = any(row.get(k) for k in ("crash", "cap", "unreported", "good_not_indexed", "duplicated_chunks",
                                             "lost_chunks", "content_lost", "outside_indexed"))
        log(f"batch {b + 1}/{n_batches}: rc={r.rc} cap={r.cap} {r.seconds:.0f}s ({r.cpu_s:.0f} s CPU) peak {r.peak_rss / MB:.0f} MB, "
            f"failed {row['checks']['failed']}, indexed {row['checks']['indexed']}, unreported {row['unreported']}, "
            f"good {row['checks']['indexed_good']}/{row['checks']['good']}"
            + (f" CRASH: {row['error_line']}" if row["crash"] else "")
            + (f" open: {r.open_files[:4]}" if r.open_files else ""))
        if not (args.keep and bad_batch):
            shutil.rmtree(folder, ignore_errors=True)
            shutil.rmtree(home, ignore_errors=True)
        write_results(out_path, args, totals, batches, per_gen, problems, clean_info, t_start, work)
    write_results(out_path, args, totals, batches, per_gen, problems, clean_info, t_start, work)
    summary = human_summary(totals, batches, per_gen, problems, time.perf_counter() - t_start)
    print(summary)
    out_path.with_suffix(".txt").write_text(summary, "utf-8")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def is_heavy(spec: Spec) -> bool:
    """A file that may legitimately index into thousands of chunks (a valid huge text, many
    headings): embedding it takes most of a batch's time cap, so a batch holds few of them."""
    light_kinds = (".pdf", ".docx")  # their size is compressed; what they expand to is the point
    return spec.ext not in light_kinds and (len(spec.data) > 256 * KB or "headings" in spec.gen)


CLEAN_BLOCK = 10  # batches whose good files one clean build covers


def clean_build(goods: list[Spec], indices: range, work: Path, mem: int, expected: dict[str, Counter],
                info: dict) -> bool:
    """Index good files ``indices`` alone in a fresh home; record each one's chunks in ``expected``."""
    clean = work / f"clean_{indices.start:05d}"
    clean.mkdir()
    names = [f"good_{i:05d}{goods[i].ext}" for i in indices]
    for i, name in zip(indices, names):
        (clean / name).write_bytes(goods[i].data)
    log(f"clean build of good files {indices.start}..{indices.stop - 1} ...")
    home = work / "home_clean"
    chunks, r = clean_index(clean, home, max(1200.0, len(names) * 10.0), mem)
    if chunks is None:
        return False
    for c in chunks:
        expected[Path(c["source"]).name][chunk_key(c)] += 1
    missing = [n for n in names if n not in expected]
    if missing:
        log(f"clean build lacks {len(missing)} good files: {missing[:5]}")
        return False
    info["files"] += len(names)
    info["chunks"] += len(chunks)
    info["seconds"] = round(info["seconds"] + r.seconds, 1)
    info["peak_rss_mb"] = max(info["peak_rss_mb"], round(r.peak_rss / MB))
    shutil.rmtree(home, ignore_errors=True)
    shutil.rmtree(clean, ignore_errors=True)
    return True


OVERSIZED = 20_000  # characters: far over any 256-token window


def check_batch(b: int, entries: list[Entry], res: dict, r: RunResult, report: dict | None, chunks: list[dict] | None,
                lr: RunResult, st: dict | None, sr: RunResult, expected: dict[str, Counter], problems: list[dict]) -> dict:
    files = res["files"]
    row: dict = {"batch": b, "rc": r.rc, "seconds": round(r.seconds, 1), "cpu_s": round(r.cpu_s, 1),
                 "peak_rss_mb": round(r.peak_rss / MB), "load1": round(os.getloadavg()[0], 1),
                 "cap": r.cap, "crash": int(r.crashed or (r.cap is None and report is None)),
                 "hang": int(r.cap == "time"), "memory_cap": int(r.cap == "memory"),
                 "leftover_processes": r.leftover, "query_errors": 0, "count_mismatch": 0}
    row["error_line"] = ""
    if row["crash"]:
        lines = [ln for ln in tail(r.stderr, 4000).splitlines() if ln.strip()]
        row["error_line"] = lines[-1][:300] if lines else f"exit {r.rc}, no output"
        problems.append({"batch": b, "what": "crash", "rc": r.rc, "stderr_tail": tail(r.stderr, 1200),
                         "gens": sorted({e.gen for e in entries if not e.good})})
    if r.cap:
        culprits = [t for t in r.open_files if "/batch_" in t or t.startswith("/dev/")]
        row["open_at_kill"] = culprits[:10]
        stack = stack_at_kill(r.stderr)
        row["stack_at_kill"] = stack
        problems.append({"batch": b, "what": f"cap:{r.cap}", "open_at_kill": culprits[:10], "seconds": round(r.seconds, 1),
                         "peak_rss_mb": round(r.peak_rss / MB), "stack": stack,
                         "gens": sorted({e.gen for e in entries if not e.good})})
    if chunks is None:
        row["query_errors"] += 1
        problems.append({"batch": b, "what": "listing failed", "rc": lr.rc, "cap": lr.cap, "stderr_tail": tail(lr.stderr, 800)})
    if st is None:
        row["query_errors"] += 1
        problems.append({"batch": b, "what": "status failed", "rc": sr.rc, "stderr_tail": tail(sr.stderr, 800)})
    elif chunks is not None and (st.get("chunks") != len(chunks)
                                 or st.get("documents") != len({c["doc_id"] for c in chunks})):
        row["count_mismatch"] = 1
        problems.append({"batch": b, "what": "status vs listing", "status": [st.get("documents"), st.get("chunks")],
                         "listing": [len({c['doc_id'] for c in chunks}), len(chunks)]})
    # a file not in the report is only "unreported" when the run finished and printed one
    unreported, good_missing, lost, dup, content_lost, outside, oversized = [], [], 0, 0, [], [], 0
    max_chars = 0
    for e in entries:
        f = files[e.name]
        for c in f["chunks"]:
            n = len(c.get("text", ""))
            max_chars = max(max_chars, n)
            if n > OVERSIZED:
                oversized += 1
        if f["chunks"]:
            seen = Counter((c.get("text"), tuple(c.get("span") or ())) for c in f["chunks"])
            d = sum(v - 1 for v in seen.values())
            if d and not e.good:
                dup += d
                problems.append({"batch": b, "what": "duplicated chunks", "file": e.name.decode("utf-8", "replace"),
                                 "gen": e.gen, "duplicates": d})
        if e.spec.forbid:
            text = " ".join(c.get("text", "") for c in f["chunks"])
            for cs in res["sources_extra"].values():
                text += " ".join(c.get("text", "") for c in cs)
            if any(w in text for w in e.spec.forbid):
                outside.append(e.name)
                problems.append({"batch": b, "what": "forbidden text indexed", "file": e.name.decode("utf-8", "replace"),
                                 "gen": e.gen})
        if (report is not None and not f["indexed"] and f["failed"] is None and supported(e.name)
                and e.spec.kind != "dir"):  # a folder named like a file is walked into, not read
            unreported.append(e.name)
            problems.append({"batch": b, "what": "unreported", "file": e.name.decode("utf-8", "replace"), "gen": e.gen})
        if f["indexed"] and e.spec.expect and not e.good:
            text = " ".join(c.get("text", "") for c in f["chunks"])
            missing = [w for w in e.spec.expect if w not in text]
            if missing:
                content_lost.append(e.name)
                problems.append({"batch": b, "what": "content lost", "file": e.name.decode("utf-8", "replace"),
                                 "gen": e.gen, "missing": missing})
        if e.good:
            want = expected[e.name.decode()]
            got = Counter(chunk_key(c) for c in f["chunks"])
            if not f["indexed"] or e.spec.marker not in " ".join(c.get("text", "") for c in f["chunks"]):
                good_missing.append(e.name)
            if got != want and f["indexed"]:
                more, less = sum((got - want).values()), sum((want - got).values())
                dup += more
                lost += less
                problems.append({"batch": b, "what": "good file chunks differ from the clean build",
                                 "file": e.name.decode(), "extra": more, "missing": less})
    if good_missing:
        problems.append({"batch": b, "what": "good files not indexed", "count": len(good_missing),
                         "files": [n.decode() for n in good_missing[:5]], "cap": r.cap, "crash": row["crash"]})
    row.update({"unreported": len(unreported), "good_not_indexed": len(good_missing), "lost_chunks": lost,
                "duplicated_chunks": dup, "content_lost": len(content_lost), "outside_indexed": len(outside),
                "oversized_chunks": oversized, "max_chunk_chars": max_chars,
                "failed_not_an_input": len(res["failed_extra"]), "sources_not_an_input": len(res["sources_extra"])})
    row["checks"] = {"files": len(entries), "good": sum(e.good for e in entries),
                     "indexed": sum(1 for e in entries if files[e.name]["indexed"]),
                     "indexed_good": sum(1 for e in entries if e.good and e.name not in good_missing),
                     "failed": sum(1 for e in entries if files[e.name]["failed"] is not None),
                     "report_added": (report or {}).get("added"), "chunks": len(chunks or [])}
    return row


def stack_at_kill(stderr: bytes) -> list[str]:
    """The ragline frames of the main thread's stack that faulthandler printed when the watchdog
    sent SIGABRT: where the run was stuck (innermost first)."""
    text = stderr.decode("utf-8", "replace")
    i = text.rfind("Current thread")
    if i < 0:
        i = text.rfind("Thread 0x")
    if i < 0:
        return []
    frames = []
    for line in text[i:].splitlines()[1:]:
        line = line.strip()
        if not line.startswith("File "):
            break
        if "ragline" in line or "site-packages" not in line:
            frames.append(line.replace(str(ROOT) + "/", "")[:200])
    return frames[:8]


def write_results(path: Path, args, totals: Counter, batches: list[dict], per_gen: dict, problems: list[dict],
                  clean_info: dict, t_start: float, work: Path) -> None:
    peak = max((b["peak_rss_mb"] for b in batches), default=0)
    data = {
        "campaign": "fuzz_ingest", "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "settings": {"files": args.files, "batch_size": args.batch_size, "seed": args.seed, "big": args.big,
                     "heavy_per_batch": args.heavy_per_batch, "wall_s": args.wall, "cap_counts": "cpu seconds" if args.cpu_cap else "wall seconds",
                     "mem_gb": args.mem_gb, "quick": args.quick, "load_avg_at_end": os.getloadavg()},
        "git": git_head(), "code": code_state(), "clean_build": clean_info,
        "seconds": round(time.perf_counter() - t_start, 1), "totals": dict(totals), "peak_rss_mb_max": peak,
        "per_generator": {g: dict(c) for g, c in sorted(per_gen.items())},
        "batches": batches,
        "problems": problems[:400], "problems_total": len(problems),
    }
    text = json.dumps(data, indent=1, default=str)
    if len(text) > 900_000:  # keep the file small: batches first lose their per-batch rows
        data["batches"] = [{k: v for k, v in b.items() if k in ("batch", "rc", "cap", "crash", "seconds", "peak_rss_mb")}
                           for b in batches]
        data["problems"] = problems[:100]
        text = json.dumps(data, indent=1, default=str)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, "utf-8")
    os.replace(tmp, path)


def git_head() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=str(ROOT)).stdout.strip()
    except OSError:
        return ""


def code_state() -> dict:
    """Which ingest code ran: HEAD plus a hash of the working tree's ingest sources (they change
    while other work goes on, so HEAD alone does not say)."""
    import hashlib

    h = hashlib.sha256()
    files = sorted((ROOT / "src" / "ragline" / "ingest").rglob("*.py")) + [ROOT / "src" / "ragline" / "cli.py"]
    for f in files:
        h.update(f.name.encode() + f.read_bytes())
    return {"head": git_head(), "ingest_sources_sha256": h.hexdigest()[:16],
            "worker_module": (ROOT / "src" / "ragline" / "ingest" / "worker.py").exists()}


def human_summary(totals: Counter, batches: list[dict], per_gen: dict, problems: list[dict], seconds: float) -> str:
    lines = [f"fuzz_ingest: {totals['bad_files']} malformed + {totals['good_files']} good files in {totals['batches']} "
             f"batches, {seconds / 60:.1f} min",
             f"  crashes {totals['crash']}, hangs (wall cap) {totals['hang']}, memory cap {totals['memory_cap']}",
             f"  unreported files {totals['unreported']}, good files not indexed {totals['good_not_indexed']}",
             f"  duplicated chunks {totals['duplicated_chunks']}, lost chunks {totals['lost_chunks']}, "
             f"content lost in indexed files {totals['content_lost']}, outside text indexed {totals['outside_indexed']} "
             "(a link out of the folder: the CLI follows it by design, serve's registered folders refuse it)",
             f"  chunks over {OVERSIZED} chars {totals['oversized_chunks']}, query/status errors {totals['query_errors']}, "
             f"status/listing mismatches {totals['count_mismatch']}, leftover processes {totals['leftover_processes']}",
             f"  peak RSS of an ingest process tree: {max((b['peak_rss_mb'] for b in batches), default=0)} MB; "
             f"slowest batch {max((b['seconds'] for b in batches), default=0):.0f} s"]
    kinds = Counter(p["what"] for p in problems)
    if kinds:
        lines.append("  problems: " + ", ".join(f"{k} x{v}" for k, v in kinds.most_common()))
    crashes = Counter(b["error_line"] for b in batches if b["crash"])
    for line, n in crashes.most_common(5):
        lines.append(f"  crash x{n}: {line}")
    opened = Counter(t for b in batches for t in b.get("open_at_kill", []) if t.startswith("/dev/") or "/batch_" in t)
    for t, n in Counter(os.path.basename(t).split("_", 2)[-1] if "/batch_" in t else t for t in opened).most_common(6):
        lines.append(f"  open when a cap was hit x{n}: {t}")
    suspects = sorted(((c.get("in_crashed_or_capped_batch", 0) / max(1, c["files"]), g) for g, c in per_gen.items()
                       if g != "good" and c.get("in_crashed_or_capped_batch")), reverse=True)[:6]
    if suspects:
        lines.append("  generators most often in crashed/capped batches: "
                     + ", ".join(f"{g} ({s:.0%})" for s, g in suspects))
    return "\n".join(lines) + "\n"


def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S ") + msg, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
