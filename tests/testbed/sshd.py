"""sshd "hosts" on loopback addresses, each with its own Unix user and home (key-only login)."""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from . import TestbedError, spawn, stop_process, wait_ready
from .ports import free_port, port_open

SSHD = "/usr/sbin/sshd"


@dataclass
class SshHost:
    """One running sshd. ``home`` is the user's home: the place where the host's sites live."""

    name: str
    address: str
    port: int
    user: str
    home: Path
    host_key: str  # "ssh-ed25519 AAAA..." without hostname
    identity_file: Path  # private key accepted for ``user``
    _proc: subprocess.Popen | None = field(default=None, repr=False)
    _authorized_keys: Path | None = field(default=None, repr=False)

    @property
    def known_hosts_line(self) -> str:
        """The host key as a known_hosts line, e.g. ``[127.0.0.2]:40022 ssh-ed25519 AAAA...``."""
        return f"[{self.address}]:{self.port} {self.host_key}"

    def run(self, cmd: str) -> subprocess.CompletedProcess:
        """Run ``cmd`` with bash as the host's user (login shell, cwd = home) locally, not over ssh.

        Raises CalledProcessError (with stdout/stderr added as a note) when the command fails.
        """
        try:
            return subprocess.run(
                ["runuser", "-l", self.user, "-c", cmd],
                check=True,
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.CalledProcessError as e:
            e.add_note(f"{self.name}$ {cmd}\nstdout: {e.stdout}\nstderr: {e.stderr}")
            raise

    def copy_in(self, source: Path, dest: str) -> None:
        """Copy a local folder's contents into ``dest`` on this host (created if missing), owned by the host's
        user. Done as root: the checkout may live where the host's user cannot read (a clone under
        ``mktemp -d`` or /root), so ``cp`` as that user would fail."""
        self.run(f"mkdir -p {shlex.quote(dest)}")
        shutil.copytree(source, dest, symlinks=True, dirs_exist_ok=True)
        _run(["chown", "-R", f"{self.user}:", dest])

    def processes(self, pattern: str) -> list[int]:
        """Return the pids of processes this sshd started (its sessions and what they run) whose command line
        matches the regex ``pattern``: another test session's processes, under its own sshd, never match."""
        children: dict[int, list[int]] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                parent = int(stat.read_text().rpartition(")")[2].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
            children.setdefault(parent, []).append(int(stat.parent.name))
        found, todo = [], list(children.get(self._proc.pid, []))
        while todo:
            pid = todo.pop()
            todo += children.get(pid, [])
            try:
                args = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if re.search(pattern, args.strip()):
                found.append(pid)
        return sorted(found)

    def stop(self) -> None:
        """Stop sshd and remove this instance's authorized_keys file."""
        stop_process(self._proc)
        if self._authorized_keys:
            self._authorized_keys.unlink(missing_ok=True)


def start_sshd(
    workdir: Path, name: str, address: str, user: str, identity_file: Path, extra_config: str = ""
) -> SshHost:
    """Start sshd on ``address``:<free port> accepting only ``user`` with the key ``identity_file``
    (``extra_config``: more sshd_config lines, e.g. ``SetEnv``).

    The user is created if missing (bash shell, home 0700). The public key goes to an authorized_keys file in
    the user's ~/.ssh named after the port, so concurrent test sessions sharing the user do not clobber each
    other's keys (StrictModes stays on).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    home = ensure_user(user)
    port = free_port(address)
    auth_keys_name = f".ssh/authorized_keys.testbed-{port}"
    authorized_keys = _install_key(user, home, auth_keys_name, public_key(identity_file))
    host_key_file = workdir / f"{name}_host_ed25519"
    host_key_file.unlink(missing_ok=True)
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(host_key_file)])
    conf = workdir / f"{name}_sshd_config"
    conf.write_text(
        _config(address, port, user, host_key_file, workdir / f"{name}_sshd.pid", auth_keys_name) + extra_config
    )
    log = workdir / f"{name}_sshd.log"
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir, absent on a fresh machine
    proc = spawn([SSHD, "-D", "-f", str(conf), "-E", str(log)], log)
    try:
        wait_ready(proc, lambda: port_open(address, port), f"sshd {name}", log)
    except TestbedError:
        authorized_keys.unlink(missing_ok=True)
        raise
    return SshHost(
        name=name,
        address=address,
        port=port,
        user=user,
        home=home,
        host_key=" ".join(Path(f"{host_key_file}.pub").read_text().split()[:2]),
        identity_file=identity_file,
        _proc=proc,
        _authorized_keys=authorized_keys,
    )


def ensure_user(user: str) -> Path:
    """Create ``user`` if absent; make it loginable by key only with bash; home 0700. Returns the home."""
    try:
        pwd.getpwnam(user)
    except KeyError:
        added = subprocess.run(["useradd", "-m", "-s", "/bin/bash", user], capture_output=True, text=True)
        if added.returncode not in (0, 9):  # 9: created meanwhile by a concurrent test session
            raise TestbedError(f"useradd {user} failed: {added.stderr.strip()}") from None
    # '*' instead of the locked '!': with UsePAM no, sshd refuses accounts whose password is locked.
    _run(["usermod", "-p", "*", "-s", "/bin/bash", user])
    home = Path(pwd.getpwnam(user).pw_dir)
    home.chmod(0o700)  # hosts must not see each other's files
    return home


def public_key(identity_file: Path) -> str:
    """The OpenSSH public key line of a private key file."""
    return _run(["ssh-keygen", "-y", "-f", str(identity_file)]).stdout.strip()


def _install_key(user: str, home: Path, relpath: str, key: str) -> Path:
    """Write ``key`` to ``home/relpath`` owned by ``user`` with the modes StrictModes demands."""
    pw = pwd.getpwnam(user)
    path = home / relpath
    path.parent.mkdir(mode=0o700, exist_ok=True)
    os.chown(path.parent, pw.pw_uid, pw.pw_gid)
    path.write_text(key + "\n")
    os.chown(path, pw.pw_uid, pw.pw_gid)
    path.chmod(0o600)
    return path


def _config(address: str, port: int, user: str, host_key: Path, pid: Path, auth_keys: str) -> str:
    return f"""\
Port {port}
ListenAddress {address}
HostKey {host_key}
PidFile {pid}
AuthorizedKeysFile {auth_keys}
AllowUsers {user}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
UsePAM no
Subsystem sftp internal-sftp
# tests may open many connections at once
MaxStartups 100
MaxSessions 50
LogLevel VERBOSE
"""


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode:
        raise TestbedError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc
