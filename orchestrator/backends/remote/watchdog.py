"""orch's watchdog: the small program every command orch runs (on a host or locally) is started under.

It makes remote work die with its orchestrator. Shipped as source (`python3 -I -S -c SOURCE ...`): standard
library only, Python 3.6+, nothing imported from orch.

    run OWNER BEAT LIMIT -- ARGV...   run ARGV as a child in this process group, supervised
    sweep OWNER                       stop what a dead orchestrator left behind

`run`: this process leads its own process group (sshd and the local connector start it as a session leader)
and the child, with ORCH_OWNER=OWNER in its environment, stays in that group. Our stdin carries frames from
orch: `D` + 4-byte big-endian length + data (the child's stdin), `E` (the child's stdin ends), `H` (heartbeat,
every BEAT seconds). The whole group is stopped (SIGINT, then SIGTERM and SIGKILL: `stop_group`) when
- stdin ends while the child runs: orch died or closed the channel (kill -9, timeout, stall, dropped SSH);
- no frame came for LIMIT seconds while we waited for one: orch froze or the network is cut.
Every BEAT seconds we write ALIVE to stderr, or PROGRESS when the group read, wrote or computed anything since
the previous beat; orch strips both and fails a command that shows neither output nor progress for too long.
The exit status is the child's (128 + N when a signal N killed it).

`sweep`: stop every process of this user whose environment says ORCH_OWNER=OWNER (an orchestrator died and
its watchdog could not stop them, e.g. it was killed too); print `pid args` of each.
"""

import _signal as signal  # the C module: `signal` imports enum, a quarter of this script's start-up time
import os
import select
import sys
import time

ALIVE = b"\x00orch:alive\x00"
PROGRESS = b"\x00orch:progress\x00"
GRACE = 5.0  # seconds a stopped command gets to clean up (restic removes its repository lock)
CHUNK = 1 << 16
MIN_IO, MIN_CPU = 4096, 2  # bytes and clock ticks per beat that count as progress


def group_members(pgid, me):
    """Return {pid: (rchar + wchar, cpu ticks)} of the other live processes of process group `pgid`."""
    members = {}
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open("/proc/%s/stat" % name, "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            if int(fields[2]) != pgid or fields[0] in (b"Z", b"X"):
                continue
            io = 0
            try:
                with open("/proc/%s/io" % name, "rb") as f:
                    for line in f:
                        if line.startswith((b"rchar:", b"wchar:")):
                            io += int(line.split()[1])
            except OSError:
                pass  # not ours to read (setuid): its CPU time still counts
            members[int(name)] = (io, int(fields[11]) + int(fields[12]))
        except (OSError, IndexError, ValueError):
            continue  # it exited while we looked
    return members


def progressed(before, after):
    """Whether a process group did real work between two `group_members` readings: a process came or went,
    or they read/wrote MIN_IO bytes or used MIN_CPU ticks. (An idle Go program such as restic still touches a
    byte every few seconds.)"""
    if before is None or set(before) != set(after):
        return True
    io = sum(after[pid][0] - before[pid][0] for pid in after)
    cpu = sum(after[pid][1] - before[pid][1] for pid in after)
    return io >= MIN_IO or cpu >= MIN_CPU


class Supervisor:
    """Run one command as our child, feed it orch's frames, beat, and stop its group when orch is gone."""

    def __init__(self, owner, beat, limit, argv):
        self.beat, self.limit = beat, limit
        self.me = os.getpid()
        if os.getpgid(0) != self.me:
            try:
                os.setpgid(0, 0)
            except OSError:
                pass
        self.pgid = os.getpgid(0)
        self.wake_r, self.wake_w = os.pipe()
        for fd in (self.wake_r, self.wake_w):
            os.set_blocking(fd, False)
        try:
            signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        except TypeError:  # Python < 3.7
            signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # the wakeup fd makes poll() return when the child exits
        # SIGINT is how a group is asked to stop (stop_group): the child's business; we stay to report its end.
        # A handler, not SIG_IGN, which the child would inherit through exec.
        signal.signal(signal.SIGINT, lambda *_: None)
        read_end, to_child = os.pipe()
        self.to_child = to_child  # type: int | None  # a type comment: this script runs on Python 3.6 hosts too
        self.child = os.fork()
        if self.child == 0:
            self._exec(read_end, to_child, owner, argv)
        os.close(read_end)
        os.set_blocking(self.to_child, False)
        self.status = None
        self.frames, self.pending, self.closing = b"", b"", False
        self.counters = None  # measured from the first beat on: short commands never scan /proc

    def _exec(self, stdin_fd, to_child, owner, argv):
        try:
            os.dup2(stdin_fd, 0)
            for fd in (stdin_fd, to_child, self.wake_r, self.wake_w):
                os.close(fd)
            for signum in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD, signal.SIGINT):
                signal.signal(signum, signal.SIG_DFL)  # Python ignores SIGPIPE; pipelines need it back
            os.environ["ORCH_OWNER"] = owner
            os.execvp(argv[0], argv)  # noqa: S606 - orch's own `bash -c SCRIPT`, built by Command
        except OSError as exc:
            os.write(2, ("orch watchdog: cannot run %s: %s\n" % (argv[0], exc)).encode())
        os._exit(127)

    def run(self):
        """Supervise until the child exits (return its status) or orch is gone (stop the group, return 124)."""
        heard = time.monotonic()
        next_beat = heard + self.beat
        while self._reap() is None:
            waiting = not self.pending  # ready for orch's next frame, not held up by a slow child
            poller = select.poll()
            poller.register(self.wake_r, select.POLLIN)
            poller.register(0, select.POLLIN if waiting else 0)  # 0: still told when orch hangs up
            if self.to_child is not None:
                poller.register(self.to_child, 0 if waiting else select.POLLOUT)
            now = time.monotonic()
            if not waiting:
                heard = now
            elif now - heard > self.limit:
                return self.stop("no word from orch for %d s" % self.limit)
            wait = max(0.0, min(next_beat, heard + self.limit) - now)
            for fd, event in poller.poll(wait * 1000):
                if fd == self.wake_r:
                    self._drain_wakeups()
                elif fd == 0:
                    data = os.read(0, CHUNK + 5) if waiting else b""
                    if not data:
                        return self.stop("orch went away")
                    heard = time.monotonic()
                    self._take(data)
                elif fd == self.to_child:
                    self._feed_child(broken=bool(event & (select.POLLERR | select.POLLNVAL)))
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + self.beat
                self._beat()
        return self.status

    def _reap(self):
        """Return the child's exit status once it has exited (128 + N for signal N), else None."""
        if self.status is None:
            pid, status = os.waitpid(self.child, os.WNOHANG)
            if pid:
                self.status = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
        return self.status

    def _drain_wakeups(self):
        try:
            while os.read(self.wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def _take(self, data):
        """Parse orch's frames; queue the child's stdin."""
        self.frames += data
        while self.frames:
            kind = self.frames[:1]
            if kind == b"D":
                if len(self.frames) < 5:
                    return
                size = int.from_bytes(self.frames[1:5], "big")
                if len(self.frames) < 5 + size:
                    return
                if self.to_child is not None:
                    self.pending += self.frames[5 : 5 + size]
                self.frames = self.frames[5 + size :]
            else:
                self.frames = self.frames[1:]
                if kind == b"E":
                    self.closing = True
            self._feed_child()

    def _feed_child(self, broken=False):
        if self.to_child is None:
            return
        try:
            if broken:
                raise BrokenPipeError
            while self.pending:
                self.pending = self.pending[os.write(self.to_child, self.pending[:CHUNK]) :]
        except BlockingIOError:
            return
        except OSError:  # the child stopped reading its stdin: drop what it did not want
            self.pending, self.closing = b"", True
        if self.closing and not self.pending:
            os.close(self.to_child)
            self.to_child = None

    def _beat(self):
        members = group_members(self.pgid, self.me)
        beat = PROGRESS if progressed(self.counters, members) else ALIVE
        self.counters = members
        _say(beat)

    def stop(self, reason):
        """Stop the whole group and return 124."""
        _say(("\norch watchdog: %s; stopping the command\n" % reason).encode())
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)
        stop_group(self.pgid, self.me, self._reap)
        return 124


def stop_group(pgid, me, reap=lambda: None):
    """Stop every process of group `pgid` but `me`: SIGINT first (restic then removes its repository lock; it
    ignores SIGTERM for that before 0.16), SIGTERM after a grace, SIGKILL last (`me` too, if it is a member).
    SIGCONT follows each, so that a stopped process receives it. `reap` collects our own exited children."""
    for signum, grace in ((signal.SIGINT, GRACE), (signal.SIGTERM, 1.0), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(pgid, signum)
            os.killpg(pgid, signal.SIGCONT)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while True:
            reap()
            if not group_members(pgid, me):
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05)


def _say(data):
    """Write to stderr unless that would block (nobody reads it): we must never hang on it."""
    try:
        if select.select([], [2], [], 0)[1]:
            os.write(2, data)
    except OSError:
        pass


def sweep(owner):
    """Stop this user's processes carrying ORCH_OWNER=owner; print `pid args` of each."""
    tag, me, found = ("ORCH_OWNER=%s" % owner).encode(), os.getpid(), []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open("/proc/%s/environ" % name, "rb") as f:
                environ = f.read().split(b"\0")
            with open("/proc/%s/cmdline" % name, "rb") as f:
                args = f.read().replace(b"\0", b" ").strip()
        except OSError:
            continue
        if tag in environ:
            found.append((int(name), args[:200]))
        elif (b" run " + owner.encode() + b" ") in args:
            found.append((int(name), b"(orch watchdog)"))
    for signum in (signal.SIGTERM, signal.SIGCONT, signal.SIGKILL):
        for pid, _ in found:
            try:
                os.kill(pid, signum)
            except OSError:
                pass
        if signum == signal.SIGCONT:
            time.sleep(min(GRACE, 2.0))
    for pid, args in found:
        print(pid, args.decode("utf-8", "replace"))
    return 0


def main(argv):
    if argv[:1] == ["sweep"]:
        return sweep(argv[1])
    if argv[:1] != ["run"] or argv[4:5] != ["--"] or len(argv) < 6:
        sys.stderr.write("usage: run OWNER BEAT LIMIT -- ARGV... | sweep OWNER\n")
        return 2
    return Supervisor(argv[1], float(argv[2]), float(argv[3]), argv[5:]).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
