"""What every test machine shares, whichever network it is on (testkit.testhost: this machine's;
testkit.testnet: a namespace of its own): the cached Debian root file system and a machine's root
prepared from it, systemd-nspawn started in a cgroup of its own, SSH with a throwaway key,
ansible-playbook against an inventory, and the removal of what a run (or a killed run) left.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE_DIR = Path(os.environ.get("SONIQUEBAY_TESTHOST_CACHE", "/var/cache/soniquebay"))
MACHINES_DIR = Path(os.environ.get("SONIQUEBAY_TESTHOST_DIR", "/var/tmp/soniquebay-testhosts"))
SUITE = "bookworm"  # the release of the deploy tests' machine; RELEASES are the ones the tests boot
RELEASES = {"bookworm": "Debian 12", "trixie": "Debian 13"}
MIRROR = os.environ.get("SONIQUEBAY_TESTHOST_MIRROR", "http://deb.debian.org/debian")
SECURITY_MIRROR = os.environ.get(
    "SONIQUEBAY_TESTHOST_SECURITY_MIRROR", "http://deb.debian.org/debian-security"
)
# A minimal server: what a fresh Debian 12 "standard" install would have that Ansible and the
# checks need (python3 for Ansible modules, sshd to reach it, iproute2 for ss).
PACKAGES = ("systemd", "systemd-sysv", "dbus", "python3", "openssh-server", "iproute2", "ca-certificates")
# What the deployment packages (backend_worker_source_dir); requirements.lock is generated if absent.
SOURCE_FILES = ("pyproject.toml", "README.md", "requirements.lock", "backend_worker")


class MachineError(RuntimeError):
    pass


def run(argv, *, check=True, timeout=None, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and proc.returncode != 0:
        raise MachineError(
            f"{' '.join(map(str, argv))} exited {proc.returncode}:\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def as_text(data) -> str:
    """What a timed-out subprocess captured (bytes, str or None), as text."""
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


# --------------------------------------------------------------------------------------------------
# The cached root file system, and a machine's root made from it
# --------------------------------------------------------------------------------------------------


def rootfs_tarball(suite: str = SUITE) -> Path:
    """The debootstrap tarball of a release (RELEASES) for PACKAGES, built once (about 70 s) and reused."""
    if suite not in RELEASES:
        raise MachineError(f"release {suite!r}: the tests boot {', '.join(RELEASES)}")
    key = hashlib.sha256("\0".join([suite, MIRROR, "minbase", *sorted(PACKAGES)]).encode()).hexdigest()[:12]
    tarball = CACHE_DIR / "testhost" / f"debian-{suite}-{key}.tar"
    if tarball.exists():
        return tarball
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with open(tarball.parent / ".lock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        if tarball.exists():
            return tarball
        MACHINES_DIR.mkdir(parents=True, exist_ok=True)
        build = Path(tempfile.mkdtemp(prefix="debootstrap-", dir=MACHINES_DIR))
        try:
            run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(PACKAGES)}",
                    suite,
                    str(build),
                    MIRROR,
                ],
                timeout=1200,
            )
            # Downloaded .debs are not part of a fresh machine.
            run(["chroot", str(build), "apt-get", "clean"])
            build.chmod(0o755)  # mkdtemp made it 0700: it becomes the machine's /
            partial = tarball.with_suffix(".partial")
            run(
                ["tar", "--numeric-owner", "--xattrs", "--acls", "-C", str(build), "-cf", str(partial), "."],
                timeout=600,
            )
            partial.replace(tarball)
        finally:
            shutil.rmtree(build, ignore_errors=True)
    return tarball


def apt_sources(suite: str) -> str:
    """What a fresh install of the release has: the release, updates and security suites."""
    return (
        f"deb {MIRROR} {suite} main\n"
        f"deb {MIRROR} {suite}-updates main\n"
        f"deb {SECURITY_MIRROR} {suite}-security main\n"
    )


def make_ssh_key(path: Path, comment: str) -> None:
    """A throwaway key pair (path, path.pub) without a passphrase."""
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])


def ssh_options(key: Path) -> list[str]:
    """ssh options for a throwaway machine: our key only, no host key kept, no prompt, quick failures."""
    return [
        "-i",
        str(key),
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "ConnectTimeout=5",
        "-o",
        "ServerAliveInterval=5",
    ]


def snapshot_source(target: Path) -> None:
    """Copy what the wheelhouse is built from (pyproject, README, lock file, the package), as it is
    now: edits made during a run don't change what its converges deploy."""
    target.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in SOURCE_FILES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, target / name, ignore=ignore)
        elif path.exists():
            shutil.copy2(path, target / name)


# --------------------------------------------------------------------------------------------------
# A booted machine
# --------------------------------------------------------------------------------------------------


class Machine:
    """A systemd-nspawn machine booted from a copy of the cached root file system, driven over SSH
    as root. Subclasses say how SSH reaches it (ssh_argv) and what nspawn adds for their network."""

    __test__ = False  # not a pytest class
    error = MachineError
    label = "the machine"  # how error messages name it

    def __init__(self, name: str, machine: str, workdir: Path):
        self.name = name
        self.machine = machine  # its nspawn machine and cgroup
        self.workdir = workdir
        self.root = workdir / "rootfs"
        self.console_log = workdir / "console.log"
        self.proc: subprocess.Popen | None = None
        self.boots = 0

    # ---- its root file system --------------------------------------------------------------------

    def unpack(self, tarball: Path) -> None:
        self.root.mkdir()
        run(
            ["tar", "--numeric-owner", "--xattrs", "--acls", "-C", str(self.root), "-xpf", str(tarball)],
            timeout=600,
        )
        self.root.chmod(0o755)  # the tarball's top directory may be 0700

    def configure(self, *, hosts: str, suite: str, sshd_conf: str, sshd_config: str, key: Path) -> None:
        """Host name, /etc/hosts, a machine id of its own, the release's apt sources, sshd (keys only,
        where `sshd_config` says) letting `key` in as root, and no login prompt on the console."""
        root = self.root
        (root / "etc/hostname").write_text(self.name + "\n")
        (root / "etc/hosts").write_text(hosts)
        (root / "etc/machine-id").write_text(os.urandom(16).hex() + "\n")
        (root / "etc/apt/sources.list").write_text(apt_sources(suite))
        (root / "etc/ssh/sshd_config.d" / sshd_conf).write_text(
            sshd_config + "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\nUseDNS no\n"
        )
        ssh_dir = root / "root/.ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        authorized = ssh_dir / "authorized_keys"
        authorized.write_text(Path(str(key) + ".pub").read_text())
        authorized.chmod(0o600)
        # Nothing in the container needs the host's terminal.
        (root / "etc/systemd/system/console-getty.service").symlink_to("/dev/null")

    # ---- life cycle ------------------------------------------------------------------------------

    def nspawn_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int((self.workdir / "nspawn.pid").read_text())
        return None

    def running(self) -> bool:
        pid = self.nspawn_pid()
        return pid is not None and is_nspawn(pid)

    def start(self, *nspawn_options: str) -> None:
        """Start systemd-nspawn booting the machine (console to console.log); does not wait."""
        if self.running():
            raise self.error(f"{self.label} is already running")
        with open(self.console_log, "a") as log:
            log.write(f"\n===== boot {self.boots + 1} =====\n")
            log.flush()
            self.proc = subprocess.Popen(
                [
                    "systemd-nspawn",
                    "--quiet",
                    "-D",
                    str(self.root),
                    f"--machine={self.machine}",
                    "--keep-unit",
                    "--register=no",
                    "--boot",
                    "--console=pipe",
                    "--link-journal=no",
                    "--resolv-conf=copy-host",
                    "--timezone=off",
                    *nspawn_options,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=enter_cgroups(machine_cgroups(self.machine)),
            )
        (self.workdir / "nspawn.pid").write_text(str(self.proc.pid))
        self.boots += 1
        # Popen can return before the child has exec'ed; until then its comm is Python's, and
        # running() (which checks the comm, so a reused pid is not taken for the machine) is False.
        deadline = time.monotonic() + 10
        while not is_nspawn(self.proc.pid) and self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)

    def ssh_reachable(self) -> bool:
        """Worth trying SSH now (a subclass may check its port first)."""
        return True

    def wait_booted(self, timeout: float = 180) -> None:
        """Wait until SSH answers and systemd finished booting."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running():
                raise self.error(f"{self.label}: systemd-nspawn exited:\n{self.console_tail()}")
            if self.ssh_reachable() and self.ssh("true", check=False, timeout=10).returncode == 0:
                break
            if time.monotonic() > deadline:
                raise self.error(f"{self.label}: no SSH after {timeout} s:\n{self.console_tail()}")
            time.sleep(0.5)
        state = self.ssh(
            "systemctl is-system-running --wait", check=False, timeout=max(10, deadline - time.monotonic())
        )
        if state.stdout.strip() not in ("running", "degraded"):
            raise self.error(f"{self.label}: systemd did not finish booting: {state.stdout.strip()}")

    def wait_stopped(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.running():
            if self.proc is not None:
                self.proc.poll()  # reaps our child once it exited
            if time.monotonic() > deadline:
                return False
            time.sleep(0.3)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        return True

    def kill(self) -> None:
        """SIGTERM to nspawn (an orderly shutdown of the machine), SIGKILL if it is not down in 60 s."""
        pid = self.nspawn_pid()
        if pid is None or not is_nspawn(pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        if not self.wait_stopped(60):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            self.wait_stopped(30)

    def shutdown(self, timeout: float = 60) -> None:
        """Power off from inside; killed if it is not down within `timeout`."""
        if self.running():
            self.ssh("systemctl poweroff", check=False, timeout=15)
            if not self.wait_stopped(timeout):
                self.kill()

    def console_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.console_log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    # ---- driving it ------------------------------------------------------------------------------

    def ssh_argv(self) -> list[str]:
        raise NotImplementedError

    def ssh(self, command: str, *, check: bool = True, timeout: float = 120, input: str | None = None):
        """Run a shell command as root on the machine."""
        try:
            proc = subprocess.run(
                [*self.ssh_argv(), command],
                capture_output=True,
                text=True,
                timeout=timeout,
                input=input,
                stdin=None if input is not None else subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            if check:
                raise self.error(f"on {self.label}: {command!r} did not finish within {timeout} s") from exc
            return subprocess.CompletedProcess(exc.cmd, 124, as_text(exc.stdout), as_text(exc.stderr))
        if check and proc.returncode != 0:
            raise self.error(
                f"on {self.label}: {command!r} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n"
                f"{proc.stderr[-3000:]}"
            )
        return proc


# --------------------------------------------------------------------------------------------------
# ansible-playbook
# --------------------------------------------------------------------------------------------------


@dataclass
class Converge:
    rc: int
    output: str
    recap: dict[str, int]

    @property
    def changed(self) -> int:
        return self.recap.get("changed", -1)

    @property
    def ok(self) -> bool:
        return self.rc == 0 and self.recap.get("failed", 1) == 0 and self.recap.get("unreachable", 1) == 0

    def tail(self, lines: int = 80) -> str:
        return "\n".join(self.output.splitlines()[-lines:])

    def changed_tasks(self) -> list[str]:
        """Names of the tasks that reported changed (from the default callback's output)."""
        names, task = [], None
        for line in self.output.splitlines():
            match = re.match(r"^(?:TASK|RUNNING HANDLER) \[(.*)\]", line)
            if match:
                task = match.group(1)
            elif line.startswith("changed:") and task:
                names.append(task)
        return names


def ansible_env(workdir: Path, tree: Path = REPO) -> dict[str, str]:
    """This environment, for ansible-playbook of this venv with the ansible.cfg of `tree` (this
    checkout, or a release's exported tree), its SSH control sockets and temporary files under
    `workdir`."""
    venv_bin = Path(sys.executable).parent
    env = dict(os.environ)
    env.update(
        {
            "ANSIBLE_CONFIG": str(tree / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(workdir / "cp"),
            "ANSIBLE_LOCAL_TEMP": str(workdir / "ansible-tmp"),
            "PATH": f"{venv_bin}:{env.get('PATH', '/usr/bin:/bin')}",
        }
    )
    return env


def run_playbook(
    workdir: Path,
    inventory: Path,
    playbook: str,
    *extra: str,
    credentials_dir: Path,
    source_dir: Path,
    release: Path | None = None,
    timeout: float = 1800,
) -> tuple[subprocess.CompletedProcess, str, Path]:
    """ansible-playbook PLAYBOOK against INVENTORY, generated passwords going to credentials_dir and
    the app built from source_dir: (the process, its output, the log file under workdir it is in).
    With `release` (an exported tree, testkit.releases.export_tree), that tree's playbook, roles and
    ansible.cfg run from it and build the app from it, as its own `make deploy` would."""
    tree = release or REPO
    source_dir = release or source_dir
    venv_bin = Path(sys.executable).parent
    ansible_playbook = venv_bin / "ansible-playbook"
    if not ansible_playbook.exists():
        ansible_playbook = Path(shutil.which("ansible-playbook") or "ansible-playbook")
    argv = [
        str(ansible_playbook),
        "-i",
        str(inventory),
        str(tree / playbook),
        "-e",
        f"soniquebay_credentials_dir={credentials_dir}",
        "-e",
        f"backend_worker_source_dir={source_dir}",
        *extra,
    ]
    proc = subprocess.run(
        argv, cwd=tree, env=ansible_env(workdir, tree), capture_output=True, text=True, timeout=timeout
    )
    output = proc.stdout + proc.stderr
    log = workdir / f"converge-{int(time.time())}.log"
    log.write_text(output)
    return proc, output, log


def play_recap(output: str, host: str) -> dict[str, int]:
    """The PLAY RECAP counts (ok, changed, failed, ...) of one host; empty if it has none."""
    match = re.search(rf"^{re.escape(host)}\s+:\s+(.*)$", output, re.MULTILINE)
    if not match:
        return {}
    return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", match.group(1))}


# --------------------------------------------------------------------------------------------------
# Cleanup, also of machines left by a killed run
# --------------------------------------------------------------------------------------------------


def is_nspawn(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "systemd-nspawn"
    except OSError:
        return False


def stop_nspawn(pids: list[int], timeout: float = 60) -> None:
    """SIGTERM each machine's nspawn (an orderly shutdown of the machine), SIGKILL the ones still
    there after `timeout`."""
    running = [pid for pid in pids if is_nspawn(pid)]
    for pid in running:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(is_nspawn(pid) for pid in running) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in running:
        if is_nspawn(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    mounts = []
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefix) or point == prefix.rstrip("/"):
                mounts.append(point)
    return sorted(mounts, key=len, reverse=True)


def remove_tree(workdir: Path, error: type[MachineError] = MachineError) -> None:
    """Unmount what is left under workdir (a stopped machine's binds) and delete it."""
    for point in mounts_under(workdir):
        subprocess.run(["umount", "-l", point], capture_output=True)
    if mounts_under(workdir):
        raise error(f"mounts left under {workdir}: {mounts_under(workdir)}")
    shutil.rmtree(workdir, ignore_errors=True)


def machine_cgroups(machine: str) -> list[Path]:
    """A cgroup of its own for a machine, in each hierarchy its systemd uses (created here).

    systemd-nspawn with --keep-unit and nothing to register with puts the machine in `payload/`
    under nspawn's own cgroup: machines started from one cgroup would share it, and their units of
    the same name (ssh.service, soniquebay-worker-scan-1.service) one cgroup, each systemd seeing
    the other's processes and removing the cgroup under it. Empty where cgroups are read-only."""
    paths = [root / f"soniquebay-{machine}" for root in _cgroup_roots()]
    try:
        for path in paths:
            path.mkdir(exist_ok=True)
    except OSError:
        return []
    return paths


def _cgroup_roots() -> list[Path]:
    base = Path("/sys/fs/cgroup")
    if (base / "cgroup.controllers").exists():  # unified only
        return [base]
    # Hybrid: the cgroup2 tree systemd tracks processes in, and its named v1 hierarchy.
    return [root for root in (base / "unified", base / "systemd") if (root / "cgroup.procs").exists()]


def enter_cgroups(paths: list[Path]):
    """A Popen preexec_fn: the child moves itself into `paths` before it execs."""

    def enter() -> None:
        for path in paths:
            (path / "cgroup.procs").write_text("0")

    return enter


def remove_machine_cgroups(machine: str) -> None:
    """Remove the machine's cgroups (once it stopped), innermost first."""
    for root in _cgroup_roots():
        top = root / f"soniquebay-{machine}"
        if not top.is_dir():
            continue
        for folder, _, _ in sorted(os.walk(top), key=lambda entry: -len(entry[0])):
            with contextlib.suppress(OSError):
                os.rmdir(folder)
