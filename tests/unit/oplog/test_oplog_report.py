"""The PM's task report renders real operations, escapes what users typed, and adds up time."""

from orchestrator.oplog import Oplog, report


def _ops(tmp_path):
    oplog = Oplog(f"sqlite:///{tmp_path}/oplog.db")
    with oplog.start(task="14883", site="shop", env="production", action="backup") as op:
        with op.step("dump"):
            pass
        op.artifact("backup", "20261127-030012-3fa2", size=10)
    try:
        with oplog.start(task="14883", site="shop", env="t14883", action="staging-create") as op:
            raise RuntimeError("nginx said <no> & | pipes")
    except RuntimeError:
        pass
    return oplog.operations(task="14883", oldest_first=True, with_details=True)


def test_markdown_lists_every_operation_with_results_and_totals(tmp_path):
    text = report.markdown("14883", _ops(tmp_path))
    assert text.startswith("# Task 14883")
    assert "2 operation(s) on shop" in text and "1 failed" in text and "1 ok" in text
    assert "backup: 20261127-030012-3fa2" in text
    assert "\\| pipes" in text  # a pipe in an error does not break the table


def test_html_is_self_contained_and_escaped(tmp_path):
    page = report.html_page("14883", _ops(tmp_path))
    assert page.startswith("<!doctype html>") and "<script" not in page and "http" not in page
    assert "nginx said &lt;no&gt; &amp;" in page and "<no>" not in page
    assert page.count("<tr>") == 3  # header + two operations


PAGE = (
    "<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title><style>td|th{color:red}</style></head>\n"
    "<body><h1>502 &amp; gone</h1><script>alert('x|y')</script>" + "<p>more</p>\n" * 200 + "</body></html>"
)


def test_one_line_reduces_an_html_page_to_its_text_and_cuts_it():
    from orchestrator.oplog.text import one_line

    assert one_line(f"restic: {PAGE}", 60) == "restic: 502 Bad Gateway 502 & gone more more more more more…"
    assert one_line("a\n  b\tc", 10) == "a b c" and one_line(None, 5) == ""
    assert one_line("expected <value> here", 40) == "expected <value> here", "not a page: kept as written"


def test_every_format_shows_an_error_page_as_one_short_escaped_line(tmp_path):
    oplog = Oplog(f"sqlite:///{tmp_path}/oplog.db")
    oplog.refused(task="1", site="shop", env="production", action="backup", error=f"storage [x](y) | {PAGE}")
    ops = oplog.operations(task="1", with_details=True)
    (row,) = [line for line in report.markdown("1", ops).splitlines() if "| backup |" in line]
    assert row.count(" | ") == 6 and "<" not in row and "\\[x\\](y)" in row and len(row) < 450
    page = report.html_page("1", ops)
    assert "<script" not in page and "502 Bad Gateway 502 &amp; gone" in page and len(page) < 3000
    (op,) = report.data("1", ops)["operations"]
    assert op["error"].startswith("storage [x](y) | 502 Bad Gateway") and len(op["error"]) <= report.ERROR_LIMIT
