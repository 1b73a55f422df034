"""Benchmark: production -> staging URL replacement on a WordPress-like mysqldump, `sed` against orch.

What is compared
    One generated dump (mysqldump format: extended INSERTs of ~1 MB per line) of a WordPress site:
    wp_options (serialized widgets and theme mods with URLs in HTML, a large serialized rewrite_rules, plugin
    settings holding JSON and serialized-in-serialized data), wp_posts (HTML with the URL in ~30 % of the
    rows, some Cyrillic text, some http:// / www. / protocol-relative links) and wp_postmeta (attachment
    metadata, Elementor-style JSON with "https:\\/\\/..." URLs, plain URLs, serialized arrays).

    * sed:  `LC_ALL=C sed 's#https://shop\\.example\\.com#https://t14883.shop.stage.example.net#g'`, what a
            hand-written staging script does (C locale: byte-wise and sed's fastest mode).
    * orch: the script orch ships to staging hosts (hostscript.script_source()), run as there:
            `python3 replace.py PAIRS mysql [WORKERS] < dump > out` with Debian's /usr/bin/python3 (--python),
            `url_pairs(old, new)`: 12 needles (http/https, www, protocol-relative, JSON-escaped), serialized
            lengths repaired; one worker per CPU of this process (--workers), and one worker for reference.
    * dd:   `dd bs=1M`, reading and writing through user space: the I/O floor on this machine. (`cat` is no
            floor: coreutils 9 copies file to file inside the kernel with copy_file_range.)

    Each output is checked by a Python parser of PHP's serialize() format: every '...' value of the dump that
    starts like a serialization (a:, O:, s:) is unescaped and parsed strictly, nested serialized strings too;
    "broken" counts values PHP's unserialize() would reject. A random sample of values is cross-checked with
    real PHP (`unserialize`) when `php` is installed. "URLs left" counts production URLs (`//host` and
    `\\/host` forms, www. included) still in the output; e-mail addresses (info@host) are not URLs.

Why it is fair
    Same file, read warm from the page cache by all of them (generated first); each run writes a fresh file on
    the same disk. The tools take turns in --repeat rounds, so a burst of load from elsewhere hits them alike;
    each figure is the median of its rounds, and the orch/sed ratio is that of the medians (each round's is
    printed too). "CPU s" is user + system time of the whole process tree; "RSS MB" is the peak of the
    resident memory of all its processes together, sampled every 10 ms (forked workers share pages with
    their parent, so the sum overstates the memory used). sed does less work (one needle, no variants, no
    serialized repair): the point is the price of doing it right. "orch, URL absent" replaces a URL that is
    not in the dump: every block takes the fast path (an anchor search, then a write).

    On a busy machine compare the CPU seconds too: Linux's autogroup scheduler gives each session an equal
    share, so when other sessions keep both CPUs busy orch's workers share one session's share, as sed does.

Usage
    .venv/bin/python bench/replace.py [--size-mb 500] [--seed 1] [--repeat 5] [--php-sample 400]
                                      [--workers N] [--python PATH] [--keep DIR] [--priority]
    --priority (root) runs it in a session of its own at autogroup nice -20, for a machine others keep busy.
"""

from __future__ import annotations

import argparse
import base64
import codecs
import contextlib
import json
import os
import platform
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.backends.cms import hostscript  # noqa: E402
from orchestrator.backends.cms.replace import default_workers, url_pairs  # noqa: E402

OLD_HOST = "shop.example.com"
OLD = f"https://{OLD_HOST}"
NEW = "https://t14883.shop.stage.example.net"
LINE_BYTES = 1 << 20  # mysqldump's default net_buffer_length makes lines of about 1 MB

# ------------------------------------------------------------------------------------- PHP serialization


class PhpObject(dict):
    """A PHP object of class ``cls`` in a structure for php_serialize()."""

    def __init__(self, cls: str, **props):
        super().__init__(props)
        self.cls = cls


def php_serialize(value) -> bytes:
    """Given a Python structure, return PHP's serialize() of it (string lengths in UTF-8 bytes)."""
    if value is None:
        return b"N;"
    if isinstance(value, bool):
        return b"b:%d;" % value
    if isinstance(value, int):
        return b"i:%d;" % value
    if isinstance(value, float):
        return b"d:" + repr(value).encode() + b";"
    if isinstance(value, str | bytes):
        raw = value.encode() if isinstance(value, str) else value
        return b's:%d:"%s";' % (len(raw), raw)
    items = value.items() if isinstance(value, dict) else enumerate(value)
    body = b"".join(php_serialize(k) + php_serialize(v) for k, v in items)
    if isinstance(value, PhpObject):
        return b'O:%d:"%s":%d:{%s}' % (len(value.cls), value.cls.encode(), len(value), body)
    return b"a:%d:{%s}" % (len(value), body)


_SQL_ESCAPES = {
    b"\\": b"\\\\",
    b"'": b"\\'",
    b'"': b'\\"',
    b"\n": b"\\n",
    b"\r": b"\\r",
    b"\0": b"\\0",
    b"\x1a": b"\\Z",
}
_SQL_SPECIAL = re.compile(rb"[\\'\"\n\r\0\x1a]")


def sql_string(value: str | bytes) -> bytes:
    """Given a value, return it as a mysqldump '...' literal."""
    raw = value.encode() if isinstance(value, str) else value
    return b"'" + _SQL_SPECIAL.sub(lambda m: _SQL_ESCAPES[m[0]], raw) + b"'"


def json_escaped(value) -> str:
    """PHP's json_encode() of a structure: slashes escaped as \\/, which is how WordPress plugins store it."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).replace("/", "\\/")


# ---------------------------------------------------------------------------------------- dump generator

WORDS = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore "
    "et dolore magna aliqua roof tile gutter flashing warranty delivery order cart checkout"
).split()
WORDS_RU = "кровля черепица водосток доставка заказ корзина гарантия монтаж цена каталог".split()


class Site:
    """Random, deterministic WordPress content around one production URL."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def text(self, words: int) -> str:
        pool = WORDS_RU if self.rng.random() < 0.2 else WORDS
        return " ".join(self.rng.choice(pool) for _ in range(words))

    def url(self, path: str = "") -> str:
        """A production URL; mostly https://host, sometimes http://, www. or protocol-relative."""
        roll = self.rng.random()
        base = (
            OLD
            if roll < 0.7
            else f"http://{OLD_HOST}"
            if roll < 0.8
            else f"https://www.{OLD_HOST}"
            if roll < 0.9
            else f"//{OLD_HOST}"
        )
        return base + path

    def upload(self) -> str:
        year, month, image = self.rng.randint(18, 24), self.rng.randint(1, 12), self.rng.randint(1, 9999)
        return f"/wp-content/uploads/20{year}/{month:02d}/img-{image}.jpg"

    def paragraph(self, with_url: bool) -> str:
        text = self.text(self.rng.randint(20, 80))
        if not with_url:
            return f"<!-- wp:paragraph -->\n<p>{text}</p>\n<!-- /wp:paragraph -->"
        kind = self.rng.random()
        if kind < 0.5:
            href = self.url(f"/product/{self.rng.randint(1, 500)}/")
            return (
                f'<!-- wp:paragraph -->\n<p>{text} <a href="{href}">{self.text(3)}</a>. It\'s here.</p>\n'
                "<!-- /wp:paragraph -->"
            )
        if kind < 0.8:
            src = self.url(self.upload())
            return (
                f'<!-- wp:image {{"id":{self.rng.randint(1, 9999)},"sizeSlug":"large"}} -->\n'
                f'<figure class="wp-block-image"><img src="{src}" alt="{self.text(2)}"/></figure>\n'
                "<!-- /wp:image -->"
            )
        return f"<p>{text} Write to info@{OLD_HOST} or see {self.url('/kontakty/')}</p>"

    def post_content(self, with_url: bool) -> str:
        count = self.rng.randint(2, 14)
        url_at = self.rng.randrange(count) if with_url else -1
        return "\n\n".join(self.paragraph(i == url_at or (with_url and self.rng.random() < 0.15)) for i in range(count))

    def widget_text(self) -> bytes:
        widgets = {
            i: {
                "title": self.text(2),
                "text": self.paragraph(True) + "\r\n" + self.paragraph(False),
                "filter": True,
                "visual": self.rng.random() < 0.5,
            }
            for i in range(2, self.rng.randint(3, 8))
        }
        widgets["_multiwidget"] = 1
        return php_serialize(widgets)

    def theme_mods(self) -> bytes:
        return php_serialize(
            {
                "nav_menu_locations": {"primary": 2, "footer": 3},
                "custom_css_post_id": -1,
                "header_image": self.url(self.upload()),
                "header_image_data": PhpObject(
                    "stdClass",
                    url=self.url(self.upload()),
                    thumbnail_url=self.url(self.upload()),
                    width=1920,
                    height=400,
                    attachment_id=self.rng.randint(1, 9999),
                ),
                "background_image": self.url(self.upload()),
                "logo_text": self.text(3),
            }
        )

    def rewrite_rules(self) -> bytes:
        return php_serialize(
            {
                f"^{self.text(1)}/([^/]+)/page/?([0-9]{{1,}})/?$": f"index.php?{self.text(1)}=$matches[1]&paged=$matches[2]"  # noqa: E501
                for _ in range(600)
            }
        )

    def plugin_settings(self) -> bytes:
        inner = php_serialize({"redirect": self.url("/thanks/"), "label": self.text(4)})
        return php_serialize(
            {
                "version": "3.2.1",
                "json": json_escaped({"cta": {"url": self.url("/sale/")}}),
                "nested": inner,
                "flags": [True, False, None, 1.5],
            }
        )

    def attachment_metadata(self) -> bytes:
        file = self.upload().removeprefix("/wp-content/uploads/")
        sizes = {
            name: {
                "file": file.replace(".jpg", f"-{w}x{w}.jpg"),
                "width": w,
                "height": w,
                "mime-type": "image/jpeg",
                "filesize": self.rng.randint(5000, 90000),
            }
            for name, w in (("thumbnail", 150), ("medium", 300), ("medium_large", 768), ("large", 1024))
        }
        return php_serialize(
            {
                "width": 2048,
                "height": 1536,
                "file": file,
                "filesize": 812345,
                "sizes": sizes,
                "image_meta": {
                    "aperture": "0",
                    "credit": "",
                    "camera": "",
                    "caption": "",
                    "copyright": "",
                    "title": self.text(2),
                    "keywords": [],
                },
            }
        )

    def elementor_data(self) -> bytes:
        widgets = [
            {
                "id": f"{self.rng.getrandbits(28):07x}",
                "elType": "widget",
                "widgetType": "image",
                "settings": {
                    "image": {"url": self.url(self.upload()), "id": self.rng.randint(1, 9999)},
                    "link": {"url": self.url("/catalog/")},
                    "title": self.text(3),
                },
            }
            for _ in range(self.rng.randint(2, 8))
        ]
        return json_escaped([{"id": "a1b2c3d", "elType": "section", "elements": widgets}]).encode()

    def serialized_links(self) -> bytes:
        return php_serialize(
            [
                {"url": self.url(f"/p/{i}"), "title": f"{self.text(2)} — {self.text(1)}"}
                for i in range(self.rng.randint(1, 6))
            ]
        )


def _pool(make, size: int) -> list[bytes]:
    return [sql_string(make()) for _ in range(size)]


def generate(path: Path, size_mb: int, seed: int) -> dict:
    """Write the dump; return counts of lines and rows."""
    rng = random.Random(seed)
    site = Site(rng)
    with_url = _pool(lambda: site.post_content(True), 300)
    without_url = _pool(lambda: site.post_content(False), 700)
    options = [
        (b"widget_text", _pool(site.widget_text, 40)),
        (b"theme_mods_storefront", _pool(site.theme_mods, 20)),
        (b"rewrite_rules", _pool(site.rewrite_rules, 3)),
        (b"shop_plugin", _pool(site.plugin_settings, 40)),
        (b"blogdescription", _pool(lambda: site.text(6), 20)),
    ]
    meta = [
        (b"_wp_attachment_metadata", _pool(site.attachment_metadata, 200)),
        (b"_elementor_data", _pool(site.elementor_data, 200)),
        (b"_menu_item_url", _pool(lambda: site.url(f"/page-{rng.randint(1, 99)}/"), 50)),
        (b"_shop_links", _pool(site.serialized_links, 200)),
        (b"_edit_lock", _pool(lambda: "1700000000:1", 1)),
    ]
    target = size_mb * 1024 * 1024
    counts = {"lines": 0, "rows": 0}
    with open(path, "wb", buffering=LINE_BYTES) as out:
        out.write(
            b"-- MariaDB dump 10.19  Distrib 10.11.6-MariaDB, for debian-linux-gnu (x86_64)\n"
            b"/*!40101 SET NAMES utf8mb4 */;\n"
            b"/*!40014 SET @OLD_UNIQUE_CHECKS=@@UNIQUE_CHECKS, UNIQUE_CHECKS=0 */;\n"
        )
        out.write(
            b"INSERT INTO `wp_options` VALUES (1,'siteurl','%s','yes'),(2,'home','%s','yes');\n"
            % (OLD.encode(), OLD.encode())
        )

        def option(i: int) -> bytes:
            name, values = rng.choice(options)
            return b"(%d,'%s_%d',%s,'yes')" % (i, name, i, rng.choice(values))

        def post(i: int) -> bytes:
            content = rng.choice(with_url) if rng.random() < 0.3 else rng.choice(without_url)
            return b"(%d,1,'2024-03-01 10:00:00',%s,'Post %d','','publish','post-%d','post')" % (i, content, i, i)

        def postmeta(i: int) -> bytes:
            key, values = rng.choice(meta)
            return b"(%d,%d,'%s',%s)" % (i, i // 4, key, rng.choice(values))

        for table, make, share in (
            (b"wp_options", option, 0.08),
            (b"wp_posts", post, 0.6),
            (b"wp_postmeta", postmeta, 0.32),
        ):
            _write_table(out, table, make, int(target * share), counts)
        out.write(b"/*!40014 SET UNIQUE_CHECKS=@OLD_UNIQUE_CHECKS */;\n-- Dump completed\n")
    return counts


def _write_table(out, table: bytes, make, budget: int, counts: dict) -> None:
    """Write rows from make(i) as extended INSERT lines of about LINE_BYTES until ``budget`` bytes."""
    written, i = 0, 10
    while written < budget:
        rows, size = [], 0
        while size < LINE_BYTES and written + size < budget:
            row = make(i)
            rows.append(row)
            size += len(row) + 1
            i += 1
        line = b"INSERT INTO `" + table + b"` VALUES " + b",".join(rows) + b";\n"
        out.write(line)
        written += len(line)
        counts["lines"] += 1
        counts["rows"] += len(rows)


# ------------------------------------------------------------------------------------ serialized checker

warnings.filterwarnings("ignore", "invalid escape sequence", DeprecationWarning)  # see _unescape
_CANDIDATE = re.compile(rb"[(,]'(?=[aOs]:\d)")  # a '...' value that starts like a serialization
_MYSQL_UNESCAPES = {b"0": b"\0", b"n": b"\n", b"r": b"\r", b"Z": b"\x1a", b"t": b"\t", b"b": b"\b"}
_SCALAR = re.compile(rb"i:-?\d+;|b:[01];|d:[^;]+;|N;")
_STRING = re.compile(rb's:(\d+):"')
_ARRAY = re.compile(rb"a:(\d+):\{")
_OBJECT = re.compile(rb'O:(\d+):"')


def _literal_end(line: bytes, start: int) -> int:
    """Given a mysqldump line and the first byte of a literal's content, return its closing quote's index."""
    pos = line.find(b"'", start)
    while pos >= 0:
        slashes = 0
        while line[pos - 1 - slashes] == 0x5C:
            slashes += 1
        if slashes % 2 == 0:
            return pos
        pos = line.find(b"'", pos + 1)
    return len(line)


def _unescape(text: bytes) -> bytes:
    """mysqldump literal content -> raw bytes. codecs.escape_decode is C-fast and right for every escape
    mysqldump writes except \\0 and \\Z (it reads \\0 as an octal escape): those take the slow path. Escapes
    Python does not know (mysqldump writes none, a damaged output may hold some) are kept, without a warning."""
    if b"\\0" in text or b"\\Z" in text:
        return re.sub(rb"\\(.)", lambda m: _MYSQL_UNESCAPES.get(m[1], m[1]), text, flags=re.S)
    return codecs.escape_decode(text)[0]


def _parse(data: bytes, pos: int) -> int:
    """Given serialized data and a position, return the end of the value there; raise ValueError if broken.
    Strings that hold a serialization themselves (serialized-in-serialized) are checked too."""
    if m := _SCALAR.match(data, pos):
        return m.end()
    if m := _STRING.match(data, pos):
        start = m.end()
        end = start + int(m[1])
        if data[end : end + 2] != b'";':
            raise ValueError(f"string length {m[1].decode()} at {pos} does not end at a quote")
        inner = data[start:end]
        if inner[:2] in (b"a:", b"O:") and inner.endswith(b"}") and _parse(inner, 0) != len(inner):
            raise ValueError("nested serialization has trailing bytes")
        return end + 2
    if m := _ARRAY.match(data, pos):
        return _parse_members(data, m.end(), 2 * int(m[1]))
    if m := _OBJECT.match(data, pos):
        after_name = m.end() + int(m[1])
        props = re.compile(rb'":(\d+):\{').match(data, after_name)
        if not props:
            raise ValueError(f"bad object at {pos}")
        return _parse_members(data, props.end(), 2 * int(props[1]))
    raise ValueError(f"unexpected {data[pos : pos + 10]!r} at {pos}")


def _parse_members(data: bytes, pos: int, count: int) -> int:
    for _ in range(count):
        pos = _parse(data, pos)
    if data[pos : pos + 1] != b"}":
        raise ValueError(f"missing }} at {pos}")
    return pos + 1


def valid_serialized(raw: bytes) -> bool:
    try:
        return _parse(raw, 0) == len(raw)
    except (ValueError, IndexError):
        return False


def check_dump(path: Path, rng: random.Random, sample_size: int) -> dict:
    """Given a dump, return how many serialized values it holds, how many are broken, how many production
    URLs are left, and a random sample of (value, verdict) for a PHP cross-check."""
    checked = broken = urls_left = 0
    sample: list[tuple[bytes, bool]] = []
    url_forms = [
        b"//" + OLD_HOST.encode(),
        b"//www." + OLD_HOST.encode(),
        b"\\\\/" + OLD_HOST.encode(),
        b"\\\\/www." + OLD_HOST.encode(),
    ]
    with open(path, "rb") as dump:
        for line in dump:
            urls_left += sum(line.count(form) for form in url_forms)
            pos = 0
            while m := _CANDIDATE.search(line, pos):
                start = m.end()
                end = _literal_end(line, start)
                raw = _unescape(line[start:end])
                ok = valid_serialized(raw)
                checked += 1
                broken += not ok
                if len(sample) < sample_size:  # reservoir sampling: every value equally likely
                    sample.append((raw, ok))
                elif (j := rng.randrange(checked)) < sample_size:
                    sample[j] = (raw, ok)
                pos = end + 1
    return {"checked": checked, "broken": broken, "urls_left": urls_left, "sample": sample}


def php_agreement(sample: list[tuple[bytes, bool]]) -> str:
    """Given (value, our verdict) pairs, return how often PHP's unserialize() agrees, or why not checked."""
    php = shutil.which("php")
    if not php or not sample:
        return "not checked (no php)" if not php else "nothing to check"
    code = (
        b"<?php while (($l = fgets(STDIN)) !== false) { echo @unserialize(base64_decode(trim($l)))"
        b' === false ? "0" : "1"; }'
    )
    with tempfile.NamedTemporaryFile(suffix=".php") as script:
        script.write(code)
        script.flush()
        lines = b"".join(base64.b64encode(raw) + b"\n" for raw, _ in sample)
        verdicts = subprocess.run([php, script.name], input=lines, capture_output=True, check=True).stdout
    agree = sum((v == ord("1")) == ok for v, (_, ok) in zip(verdicts, sample, strict=True))
    broken = sum(v == ord("0") for v in verdicts)
    return f"PHP agrees on {agree}/{len(sample)} sampled values ({broken} rejected by PHP)"


# ---------------------------------------------------------------------------------------------- timing


@dataclass
class Run:
    """One timed run of a command: wall and CPU seconds (its whole process tree), peak RSS."""

    wall: float
    cpu: float
    rss_max: int  # the largest process
    rss_sum: int  # all its processes together, sampled every 10 ms
    stderr: str


def run_once(argv: list[str], stdin: Path, stdout: Path, env: dict | None = None) -> Run:
    """Run argv from stdin into a fresh stdout file; return its timings and memory."""
    stdout.unlink(missing_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(stdin, "rb") as fin, open(stdout, "wb") as fout, tempfile.TemporaryFile() as ferr:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=fin, stdout=fout, stderr=ferr, env=env)
        rss_sum = 0
        while proc.poll() is None:
            rss_sum = max(rss_sum, tree_rss(proc.pid))
            time.sleep(0.01)
        wall = time.perf_counter() - start
        ferr.seek(0)
        err = ferr.read().decode(errors="replace")
    if proc.returncode:
        raise RuntimeError(f"{argv[0]} failed ({proc.returncode}): {err[-500:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # ru_maxrss of RUSAGE_CHILDREN is that of the largest descendant so far: only rises, so compare
    return Run(
        wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, after.ru_maxrss * 1024, rss_sum, err
    )


def tree_rss(pid: int) -> int:
    """Given a pid, return the resident bytes of it and its descendants (0 for those that just exited)."""
    total = 0
    with contextlib.suppress(OSError):
        status = Path(f"/proc/{pid}/status").read_text()
        total = int(re.search(r"VmRSS:\s+(\d+) kB", status)[1]) * 1024 if "VmRSS" in status else 0
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            total += tree_rss(int(child))
    return total


def machine(python: str) -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
            if line.startswith("Model name")
        ),
        "?",
    )
    sed = subprocess.run(["sed", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    host_python = subprocess.run([python, "--version"], capture_output=True, text=True).stdout.strip()
    return f"{os.cpu_count()} cores ({model}), {platform.platform()}, {host_python} ({python}), {sed}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5, help="rounds of runs; medians count")
    parser.add_argument("--php-sample", type=int, default=400, help="values per output checked with PHP")
    parser.add_argument(
        "--python",
        default="/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable,
        help="the python3 that runs the host script (default: Debian's)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=default_workers(),
        help="orch's workers (default: as on a host, one per CPU of this process, at most 4)",
    )
    parser.add_argument("--keep", type=Path, help="generate into DIR and keep the files")
    parser.add_argument(
        "--priority",
        action="store_true",
        help="root: run in a session of its own at autogroup nice -20, so that the load of other "
        "sessions disturbs the comparison less (sed and orch alike)",
    )
    args = parser.parse_args()
    if args.priority:
        take_priority()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="orch-bench-replace-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        bench(workdir, args)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def take_priority() -> None:
    """Move this process into a new session and raise that session's CPU share (Linux's autogroup scheduler
    shares the CPUs between sessions; each worker and tool started later inherits the session). A process
    group leader cannot start a session: it runs itself again under setsid(1) and exits with its status."""
    try:
        os.setsid()
    except PermissionError:
        sys.exit(subprocess.run(["setsid", "--wait", sys.executable, *sys.argv]).returncode)
    Path("/proc/self/autogroup").write_text("-20")


def bench(workdir: Path, args) -> None:
    dump, other = workdir / "prod.sql", workdir / "other.sql"
    outs = {name: workdir / f"{name}.sql" for name in ("sed", "orch")}
    start = time.perf_counter()
    counts = generate(dump, args.size_mb, args.seed)
    mb = dump.stat().st_size / 1e6
    script = workdir / "replace.py"
    script.write_text(hostscript.script_source())
    print(
        f"generated {mb:.0f} MB ({counts['lines']} INSERT lines, {counts['rows']} rows) in "
        f"{time.perf_counter() - start:.0f} s\nmachine: {machine(args.python)}\nload average before the runs: "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; {Path('/proc/self/autogroup').read_text().strip()}",
        flush=True,
    )

    def orch(old: str, workers: int) -> list[str]:
        return [args.python, str(script), json.dumps(url_pairs(old, NEW)), "mysql", str(workers)]

    sed_env = {**os.environ, "LC_ALL": "C"}
    tools = {  # name -> (label, argv, env, output)
        "dd": ("dd bs=1M (I/O floor)", ["dd", "bs=1M", "status=none"], None, other),
        "sed": (
            "sed 's#https://shop\\.example\\.com#...#g'",
            ["sed", "s#" + OLD.replace(".", "\\.") + "#" + NEW + "#g"],
            sed_env,
            outs["sed"],
        ),
        "orch": (f"orch, {args.workers} workers", orch(OLD, args.workers), None, outs["orch"]),
        "orch-1": ("orch, 1 worker", orch(OLD, 1), None, other),
        "orch-fast": (
            f"orch, URL absent (fast path), {args.workers} w.",
            orch("https://absent.example.org", args.workers),
            None,
            other,
        ),
    }
    runs: dict[str, list[Run]] = {name: [] for name in tools}
    for _ in range(args.repeat):  # rounds: the tools take turns, so a burst of load hits them alike
        for name, (_, argv, env, out) in tools.items():
            runs[name].append(run_once(argv, dump, out, env))
    load_after = os.getloadavg()
    other.unlink()

    rng = random.Random(args.seed)
    checks = {name: check_dump(path, rng, args.php_sample) for name, path in (("input", dump), *outs.items())}
    print(
        f"\nURL replacement, {mb:.0f} MB dump ({checks['input']['checked']} serialized values, "
        f"{checks['input']['urls_left']} production URLs in the input); medians of {args.repeat} rounds"
    )
    print(f"{'':<44}{'MB/s':>7}{'s':>7}{'CPU s':>7}{'RSS MB':>8}{'broken serialized':>19}{'URLs left':>11}")
    for name, (label, *_) in tools.items():
        wall, cpu = statistics.median([r.wall for r in runs[name]]), statistics.median([r.cpu for r in runs[name]])
        rss = max(r.rss_sum for r in runs[name])
        check = checks.get(name, {})
        print(
            f"{label:<44}{mb / wall:>7.0f}{wall:>7.2f}{cpu:>7.2f}{rss / 1e6:>8.0f}"
            f"{check.get('broken', ''):>19}{check.get('urls_left', ''):>11}"
        )
    rounds = [s.wall / o.wall for s, o in zip(runs["sed"], runs["orch"], strict=True)]
    sed_wall, orch_wall = (statistics.median([r.wall for r in runs[name]]) for name in ("sed", "orch"))
    stats = hostscript.parse_stats(runs["orch"][-1].stderr)
    print(
        f"\norch MB/s / sed MB/s: {sed_wall / orch_wall:.2f} (medians); per round: "
        f"{', '.join(f'{r:.2f}' for r in rounds)}"
    )
    print(
        f"orch peak RSS: {max(r.rss_sum for r in runs['orch']) / 1e6:.0f} MB for all its processes together "
        f"(sampled), largest process {max(r.rss_max for r in runs['orch']) / 1e6:.0f} MB"
    )
    print(
        f"orch: {stats['lines_changed']}/{stats['lines']} lines changed, {stats['replacements']} replacements, "
        f"{stats['serialized_fixed']} lengths fixed, {stats['serialized_skipped']} skipped"
    )
    print(f"load average after the runs: {' '.join(f'{x:.2f}' for x in load_after)}")
    for name in outs:
        print(f"{name}: {php_agreement(checks[name]['sample'])}")
    print_per_table(dump, workdir, orch(OLD, args.workers))


def print_per_table(dump: Path, workdir: Path, argv: list[str]) -> None:
    """Time orch on each table's lines alone: the cost follows the URL density, not the byte count."""
    parts = {table: workdir / f"{table}.sql" for table in ("wp_options", "wp_posts", "wp_postmeta")}
    with contextlib.ExitStack() as stack, open(dump, "rb") as src:
        outs = {table: stack.enter_context(open(path, "wb")) for table, path in parts.items()}
        for line in src:
            if line.startswith(b"INSERT INTO `"):
                outs[line[13 : line.index(b"`", 13)].decode()].write(line)
    print("\norch per table (alone, best of 2):")
    for table, path in parts.items():
        run = min((run_once(argv, path, workdir / "part.sql") for _ in range(2)), key=lambda r: r.wall)
        stats = hostscript.parse_stats(run.stderr)
        mb = path.stat().st_size / 1e6
        print(
            f"  {table:<12} {mb:6.0f} MB {mb / run.wall:6.0f} MB/s ({mb / run.cpu:.0f} per CPU second), "
            f"{stats['replacements'] / mb:6.0f} URLs/MB, {stats['serialized_fixed'] / mb:5.0f} lengths fixed/MB"
        )
        path.unlink()
    (workdir / "part.sql").unlink()


if __name__ == "__main__":
    main()
