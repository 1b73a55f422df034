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
