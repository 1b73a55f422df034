"""The live count of a fleet run (`backup --all`): sites done of N and failures so far, on a terminal only."""

from __future__ import annotations

import io
import threading

from orchestrator.cli.output import sites_progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_sees_sites_done_of_n_and_the_failures_so_far_from_worker_threads():
    out = Terminal()
    with sites_progress(4, "backing up", file=out) as done:
        threads = [threading.Thread(target=done, args=({"status": status},)) for status in ("ok", "failed", "ok", "ok")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    text = out.getvalue()
    assert "backing up" in text and "4/4" in text and "1 failed" in text


def test_nothing_is_drawn_off_a_terminal_or_for_a_single_site():
    for out, total in ((io.StringIO(), 3), (Terminal(), 1), (Terminal(), 0)):
        with sites_progress(total, "backing up", file=out) as done:
            done({"status": "failed"})
        assert out.getvalue() == ""
