"""The replacer shipped to hosts runs standalone (no orch installed) and reports its counts."""

import dataclasses
import json
import subprocess
import sys

from orchestrator.backends.cms import hostscript
from orchestrator.backends.cms.replace import replace_bytes, url_pairs
from orchestrator.backends.remote import LocalConnector


def test_the_shipped_script_replaces_and_reports_without_orch_installed(tmp_path):
    script = tmp_path / "replace.py"
    script.write_text(hostscript.script_source())
    pairs = url_pairs("https://shop.example", "https://t1.shop.stage.example")
    dump = b'INSERT INTO o VALUES (1,\'a:1:{s:3:\\"url\\";s:20:\\"https://shop.example\\";}\');\n'
    proc = subprocess.run(
        [sys.executable, "-I", "-S", str(script), json.dumps(pairs), "mysql"],
        input=dump,
        capture_output=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert b's:29:\\"https://t1.shop.stage.example\\"' in proc.stdout
    assert hostscript.parse_stats(proc.stderr.decode())["replacements"] == 1


def test_ensure_script_writes_once_per_content(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    conn = LocalConnector()
    first = hostscript.ensure_script(conn)
    assert first.startswith(str(tmp_path)) and hostscript.ensure_script(conn) == first


def test_the_shipped_script_uses_a_worker_per_cpu_and_writes_the_serial_output(tmp_path):
    script = tmp_path / "replace.py"
    script.write_text(hostscript.script_source())
    pairs = url_pairs("https://shop.example", "https://t1.shop.stage.example")
    row = b'(%d,\'a:1:{s:3:\\"url\\";s:20:\\"https://shop.example\\";}\',\'<a href=\\"https://shop.example/x\\">\')'
    dump = b"".join(
        b"INSERT INTO o VALUES " + b",".join(row % (i * 100 + j) for j in range(100)) + b";\n" for i in range(300)
    )
    expected, expected_stats = replace_bytes(dump, pairs)

    def run(*workers: str):
        proc = subprocess.run(
            [sys.executable, "-I", "-S", str(script), json.dumps(pairs), "mysql", *workers],
            input=dump,
            capture_output=True,
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout, hostscript.parse_stats(proc.stderr.decode())

    for workers in ((), ("1",), ("3",)):  # () = one per CPU this process may use
        out, stats = run(*workers)
        assert out == expected and stats == dataclasses.asdict(expected_stats), workers
