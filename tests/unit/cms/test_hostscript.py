"""The replacer shipped to hosts runs standalone (no orch installed) and reports its counts."""
import subprocess
import sys

from orchestrator.backends.cms import hostscript
from orchestrator.backends.cms.replace import url_pairs
from orchestrator.backends.remote import LocalConnector


def test_the_shipped_script_replaces_and_reports_without_orch_installed(tmp_path):
    script = tmp_path / "replace.py"
    script.write_text(hostscript.script_source())
    pairs = url_pairs("https://shop.example", "https://t1.shop.stage.example")
    dump = b"INSERT INTO o VALUES (1,'a:1:{s:3:\\\"url\\\";s:20:\\\"https://shop.example\\\";}');\n"
    proc = subprocess.run([sys.executable, "-I", "-S", str(script), __import__("json").dumps(pairs), "mysql"],
                          input=dump, capture_output=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert b's:29:\\"https://t1.shop.stage.example\\"' in proc.stdout
    assert hostscript.parse_stats(proc.stderr.decode())["replacements"] == 1


def test_ensure_script_writes_once_per_content(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    conn = LocalConnector()
    first = hostscript.ensure_script(conn)
    assert first.startswith(str(tmp_path)) and hostscript.ensure_script(conn) == first
