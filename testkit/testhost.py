"""A fresh, booted Debian 12 with systemd for deployment tests: debootstrap + systemd-nspawn.

The machine shares this host's network namespace (so its sshd, nginx, Redis, PostgreSQL and Flower
listen on this machine's loopback ports) and is driven over SSH with a throwaway key, exactly like a
remote host. The debootstrap result is cached as a tarball under /var/cache/soniquebay/ (keyed by the
suite, mirror and package list); each run unpacks a fresh copy under /var/tmp and deletes it at the end.

    host = TestHost.create()          # unpack, configure sshd, boot, wait for SSH and systemd
    host.ssh("systemctl is-active soniquebay.target")
    host.converge()                   # ansible-playbook playbooks/site.yml against it
    host.reboot()                     # nspawn exits on reboot: started again, like a machine coming back
    host.destroy()                    # poweroff, unmount, delete (also for leftovers of a killed run)

For development, keep one machine up between pytest runs:
    python -m testkit.testhost up       # boot + converge, prints its name; SONIQUEBAY_TESTHOST=<name>
    SONIQUEBAY_TESTHOST=<name> pytest tests/deploy -k ...   # attaches to it, leaves it running
    python -m testkit.testhost down <name>

Used by tests/deploy/conftest.py (one machine per pytest session); reusable by browser or fault tests.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
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
# Ports the deployment listens on inside the machine, which shares this host's network.
SERVICE_PORTS = {
    80: "nginx",
    443: "nginx (HTTPS)",
    5555: "Flower",
    6379: "Redis",
    5432: "PostgreSQL",
    9090: "Prometheus",
    9808: "soniquebay exporter",
}
# Left alone: taken by something else on the development machines.
RESERVED_PORTS = {22, 2024}
SSH_PORTS = range(2222, 2300)
# What the deployment packages (backend_worker_source_dir); requirements.lock is generated if absent.
SOURCE_FILES = ("pyproject.toml", "README.md", "requirements.lock", "backend_worker")


class TestHostError(RuntimeError):
    pass


def _run(argv, *, check=True, timeout=None, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and proc.returncode != 0:
        raise TestHostError(
            f"{' '.join(map(str, argv))} exited {proc.returncode}:\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def _text(data) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def listener_of(port: int) -> str:
    proc = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True)
    return proc.stdout.strip() or "(unknown process)"


# --------------------------------------------------------------------------------------------------
# The cached root file system
# --------------------------------------------------------------------------------------------------


def rootfs_tarball(suite: str = SUITE) -> Path:
    """The debootstrap tarball of a release (RELEASES) for PACKAGES, built once (about 70 s) and reused."""
    if suite not in RELEASES:
        raise TestHostError(f"release {suite!r}: the tests boot {', '.join(RELEASES)}")
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
            _run(
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
            _run(["chroot", str(build), "apt-get", "clean"])
            build.chmod(0o755)  # mkdtemp made it 0700: it becomes the machine's /
            partial = tarball.with_suffix(".partial")
            _run(
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


# --------------------------------------------------------------------------------------------------
# The machine
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


class TestHost:
    """One booted systemd-nspawn machine. Create with TestHost.create(); always destroy()."""

    __test__ = False  # not a pytest class

    def __init__(self, name: str, workdir: Path, ssh_port: int):
        self.name = name
        self.workdir = workdir
        self.root = workdir / "rootfs"
        self.ssh_port = ssh_port
        self.key = workdir / "id_ed25519"
        self.credentials_dir = workdir / "credentials"
        self.inventory_dir = workdir / "inventory"
        self.console_log = workdir / "console.log"
        # The app as it was when the machine was created: edits made during the run don't change
        # what converges deploy (a changed build restarts every worker).
        self.source_dir = workdir / "source"
        self.proc: subprocess.Popen | None = None
        self.boots = 0
        self.kept = False  # attached to a machine kept up for development: destroy() leaves it

    # ---- life cycle ------------------------------------------------------------------------------

    @classmethod
    def create(cls, name: str | None = None) -> TestHost:
        cleanup_leftovers()
        for port, service in SERVICE_PORTS.items():
            if port_in_use(port):
                raise TestHostError(
                    f"port {port} ({service} of the test host) is already taken on this machine by "
                    f"{listener_of(port)}: the test host shares this machine's network, stop that first"
                )
        ssh_port = next((p for p in SSH_PORTS if p not in RESERVED_PORTS and not port_in_use(p)), None)
        if ssh_port is None:
            raise TestHostError(f"no free port for the test host's sshd in {SSH_PORTS}")
        tarball = rootfs_tarball()
        name = name or f"sbtest-{os.getpid()}"
        MACHINES_DIR.mkdir(parents=True, exist_ok=True)
        workdir = MACHINES_DIR / name
        if workdir.exists():
            destroy_workdir(workdir)
        workdir.mkdir(mode=0o700)
        (workdir / "owner.pid").write_text(str(os.getpid()))
        (workdir / "ssh.port").write_text(str(ssh_port))
        host = cls(name, workdir, ssh_port)
        try:
            host._unpack(tarball)
            host._configure()
            host._write_inventory()
            host._snapshot_source()
            host.boot()
        except BaseException:
            host.destroy()
            raise
        return host

    @classmethod
    def attach(cls, name: str) -> TestHost:
        """A machine kept running by `python -m testkit.testhost up` (not destroyed by the tests)."""
        workdir = MACHINES_DIR / name
        try:
            ssh_port = int((workdir / "ssh.port").read_text())
            pid = int((workdir / "nspawn.pid").read_text())
        except (OSError, ValueError) as exc:
            raise TestHostError(f"no kept test host {name} under {MACHINES_DIR}: {exc}") from exc
        if not _is_nspawn(pid):
            raise TestHostError(f"test host {name} is not running (nspawn pid {pid} is gone)")
        host = cls(name, workdir, ssh_port)
        host.kept = True
        host.boots = 1
        host._write_inventory()
        # Converges deploy the code as it is now.
        shutil.rmtree(host.source_dir, ignore_errors=True)
        host._snapshot_source()
        return host

    def _unpack(self, tarball: Path) -> None:
        self.root.mkdir()
        _run(
            ["tar", "--numeric-owner", "--xattrs", "--acls", "-C", str(self.root), "-xpf", str(tarball)],
            timeout=600,
        )
        self.root.chmod(0o755)  # the tarball's top directory may be 0700

    def _configure(self) -> None:
        root = self.root
        (root / "etc/hostname").write_text(self.name + "\n")
        (root / "etc/hosts").write_text(
            f"127.0.0.1\tlocalhost\n127.0.1.1\t{self.name}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        )
        (root / "etc/machine-id").write_text(os.urandom(16).hex() + "\n")
        (root / "etc/apt/sources.list").write_text(apt_sources(SUITE))
        # sshd on loopback only, keys only, on a port this machine does not use.
        (root / "etc/ssh/sshd_config.d/testhost.conf").write_text(
            f"Port {self.ssh_port}\nListenAddress 127.0.0.1\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nUseDNS no\n"
        )
        _run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                f"{self.name}-throwaway",
                "-f",
                str(self.key),
            ]
        )
        ssh_dir = root / "root/.ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        authorized = ssh_dir / "authorized_keys"
        authorized.write_text(Path(str(self.key) + ".pub").read_text())
        authorized.chmod(0o600)
        # Nothing in the container needs the host's terminal; no login prompts on the console.
        getty = root / "etc/systemd/system/console-getty.service"
        getty.symlink_to("/dev/null")

    def _snapshot_source(self) -> None:
        """Copy what the wheelhouse is built from: pyproject, README, lock file, the package."""
        self.source_dir.mkdir()
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
        for name in SOURCE_FILES:
            path = REPO / name
            if path.is_dir():
                shutil.copytree(path, self.source_dir / name, ignore=ignore)
            elif path.exists():
                shutil.copy2(path, self.source_dir / name)

    def _write_inventory(self) -> None:
        """Same groups and group_vars as inventory/local, but reached over SSH."""
        self.inventory_dir.mkdir(exist_ok=True)
        group_vars = self.inventory_dir / "group_vars"
        if not group_vars.is_symlink():
            group_vars.symlink_to(REPO / "inventory/local/group_vars")
        host_vars = {
            "ansible_host": "127.0.0.1",
            "ansible_port": self.ssh_port,
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(self.key),
            "ansible_ssh_common_args": (
                "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
            ),
            "ansible_python_interpreter": "/usr/bin/python3",
            # No timeout or limit of its own: the fault tests run on the shipped values (task
            # limits 300-900 s, visibility timeout 1,800 s), as a new user's `make deploy` does.
            # The fault, pipeline and bench scans must be the only ones on this machine: no watch
            # starting sessions when a test lays out a library, no timer firing at 03:00. Both run
            # with the defaults on the machine of tests/readme/test_make_deploy.py.
            "backend_worker_watch": False,
            "backend_worker_scan_schedule": "",
        }
        inventory = {
            "all": {
                "hosts": {self.name: host_vars},
                "children": {
                    group: {"hosts": {self.name: None}}
                    for group in ("broker", "database", "workers", "monitoring", "prometheus")
                },
            }
        }
        # JSON is YAML: no yaml module needed.
        (self.inventory_dir / "hosts.yml").write_text(json.dumps(inventory, indent=2))

    def boot(self, timeout: float = 180) -> None:
        """Start the machine and wait until SSH answers and systemd finished booting."""
        if self.proc is not None and self.proc.poll() is None:
            raise TestHostError("the test host is already running")
        log = open(self.console_log, "a")  # noqa: SIM115 (handed to nspawn, closed below)
        log.write(f"\n===== boot {self.boots + 1} =====\n")
        log.flush()
        self.proc = subprocess.Popen(
            [
                "systemd-nspawn",
                "--quiet",
                "-D",
                str(self.root),
                f"--machine={self.name}",
                "--keep-unit",
                "--register=no",
                "--boot",
                "--console=pipe",
                "--link-journal=no",
                "--resolv-conf=copy-host",
                "--timezone=off",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=enter_cgroups(machine_cgroups(self.name)),
        )
        log.close()
        (self.workdir / "nspawn.pid").write_text(str(self.proc.pid))
        self.boots += 1
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise TestHostError(f"systemd-nspawn exited {self.proc.returncode}:\n{self.console_tail()}")
            if port_in_use(self.ssh_port) and self.ssh("true", check=False, timeout=10).returncode == 0:
                break
            if time.monotonic() > deadline:
                raise TestHostError(
                    f"no SSH on port {self.ssh_port} after {timeout} s:\n{self.console_tail()}"
                )
            time.sleep(0.5)
        state = self.ssh(
            "systemctl is-system-running --wait", check=False, timeout=max(10, deadline - time.monotonic())
        )
        if state.stdout.strip() not in ("running", "degraded"):
            raise TestHostError(f"systemd did not finish booting: {state.stdout.strip()}")

    def wait_stopped(self, timeout: float) -> bool:
        if self.proc is None:
            # Attached to a kept machine: not our child, poll its pid.
            with contextlib.suppress(OSError, ValueError):
                pid = int((self.workdir / "nspawn.pid").read_text())
                deadline = time.monotonic() + timeout
                while _is_nspawn(pid):
                    if time.monotonic() > deadline:
                        return False
                    time.sleep(0.5)
            return True
        try:
            self.proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def reboot(self, timeout: float = 240) -> None:
        """systemctl reboot inside; nspawn exits when the machine goes down, so start it again."""
        self.ssh("systemctl reboot", check=False, timeout=15)
        if not self.wait_stopped(timeout):
            raise TestHostError(f"the test host did not shut down within {timeout} s:\n{self.console_tail()}")
        self.boot()

    def destroy(self) -> None:
        """Power off (cleanly if possible), unmount what is left and delete the machine."""
        if self.kept:
            return
        if self.proc is not None and self.proc.poll() is None:
            self.ssh("systemctl poweroff", check=False, timeout=15)
            if not self.wait_stopped(90):
                # nspawn turns SIGTERM into an orderly shutdown of the container.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGTERM)
                if not self.wait_stopped(60):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.proc.pid, signal.SIGKILL)
                    self.wait_stopped(30)
        destroy_workdir(self.workdir)

    def console_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.console_log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    # ---- driving it ------------------------------------------------------------------------------

    def ssh_argv(self) -> list[str]:
        return [
            "ssh",
            "-i",
            str(self.key),
            "-p",
            str(self.ssh_port),
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
            "root@127.0.0.1",
        ]

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
                raise TestHostError(
                    f"on the test host: {command!r} did not finish within {timeout} s"
                ) from exc
            return subprocess.CompletedProcess(exc.cmd, 124, _text(exc.stdout), _text(exc.stderr))
        if check and proc.returncode != 0:
            raise TestHostError(
                f"on the test host: {command!r} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n"
                f"{proc.stderr[-3000:]}"
            )
        return proc

    def converge(self, playbook: str = "playbooks/site.yml", *extra: str, timeout: float = 1800) -> Converge:
        """ansible-playbook against this machine (generated passwords go to the run's credentials dir)."""
        venv_bin = Path(sys.executable).parent
        ansible_playbook = venv_bin / "ansible-playbook"
        if not ansible_playbook.exists():
            ansible_playbook = Path(shutil.which("ansible-playbook") or "ansible-playbook")
        env = dict(os.environ)
        env.update(
            {
                "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
                "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_FORCE_COLOR": "0",
                "ANSIBLE_HOST_KEY_CHECKING": "False",
                "ANSIBLE_SSH_CONTROL_PATH_DIR": str(self.workdir / "cp"),
                "ANSIBLE_LOCAL_TEMP": str(self.workdir / "ansible-tmp"),
                "PATH": f"{venv_bin}:{env.get('PATH', '/usr/bin:/bin')}",
            }
        )
        argv = [
            str(ansible_playbook),
            "-i",
            str(self.inventory_dir),
            str(REPO / playbook),
            "-e",
            f"soniquebay_credentials_dir={self.credentials_dir}",
            "-e",
            f"backend_worker_source_dir={self.source_dir}",
            *extra,
        ]
        proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
        output = proc.stdout + proc.stderr
        log = self.workdir / f"converge-{int(time.time())}.log"
        log.write_text(output)
        recap: dict[str, int] = {}
        match = re.search(rf"^{re.escape(self.name)}\s+:\s+(.*)$", output, re.MULTILINE)
        if match:
            recap = {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", match.group(1))}
        return Converge(proc.returncode, output, recap)

    def credential(self, name: str) -> str:
        return (self.credentials_dir / name).read_text().strip()

    def flower_certificate(self) -> Path:
        """The controller's copy of the certificate nginx serves (the nginx role fetches it)."""
        return self.credentials_dir / f"flower-certificate-{self.name}.pem"

    def write_file(self, path: str, data: bytes | str, mode: int = 0o644) -> Path:
        """Write into the machine's file system from outside (like a mounted share)."""
        target = self.root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data.encode() if isinstance(data, str) else data)
        target.chmod(mode)
        return target

    def unit_main_pid(self, unit: str) -> int:
        return int(self.ssh(f"systemctl show -P MainPID {unit}").stdout.strip())

    def wait_active(self, units: list[str], timeout: float = 180) -> dict[str, str]:
        """Wait until every unit is active; returns the last states seen."""
        deadline = time.monotonic() + timeout
        while True:
            out = self.ssh("systemctl is-active " + " ".join(units), check=False).stdout.split()
            states = dict(zip(units, out, strict=False))
            if len(out) == len(units) and all(state == "active" for state in out):
                return states
            if time.monotonic() > deadline:
                return states
            time.sleep(1)


# --------------------------------------------------------------------------------------------------
# Cleanup, also of machines left by a killed run
# --------------------------------------------------------------------------------------------------


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    mounts = []
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefix) or point == prefix.rstrip("/"):
                mounts.append(point)
    return sorted(mounts, key=len, reverse=True)


def destroy_workdir(workdir: Path) -> None:
    pidfile = workdir / "nspawn.pid"
    with contextlib.suppress(OSError, ValueError):
        pid = int(pidfile.read_text())
        if _is_nspawn(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            for _ in range(60):
                if not _is_nspawn(pid):
                    break
                time.sleep(1)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    for point in _mounts_under(workdir):
        subprocess.run(["umount", "-l", point], capture_output=True)
    if _mounts_under(workdir):
        raise TestHostError(f"mounts left under {workdir}: {_mounts_under(workdir)}")
    remove_machine_cgroups(workdir.name)
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


def _is_nspawn(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "systemd-nspawn"
    except OSError:
        return False


def cleanup_leftovers() -> None:
    """Remove machines whose owning test process is gone (a run killed before its teardown)."""
    if not MACHINES_DIR.exists():
        return
    for workdir in MACHINES_DIR.iterdir():
        if not workdir.is_dir() or workdir.name.startswith("debootstrap-"):
            continue
        try:
            owner_text = (workdir / "owner.pid").read_text().strip()
            if owner_text == "kept" and _is_nspawn(int((workdir / "nspawn.pid").read_text())):
                continue  # kept up for development (python -m testkit.testhost up)
            owner = int(owner_text)
            os.kill(owner, 0)
            continue  # still owned by a live process
        except (OSError, ValueError):
            pass
        destroy_workdir(workdir)


def main(argv: list[str]) -> int:
    """python -m testkit.testhost up | down NAME: a converged machine kept up for development."""
    if argv[:1] == ["up"]:
        host = TestHost.create(name="sbdev")
        (host.workdir / "owner.pid").write_text("kept")
        result = host.converge()
        print(result.tail(15))
        print(f"SONIQUEBAY_TESTHOST={host.name}  (ssh port {host.ssh_port}, workdir {host.workdir})")
        return 0 if result.ok else 1
    if len(argv) == 2 and argv[0] == "down":
        destroy_workdir(MACHINES_DIR / argv[1])
        return 0
    print("usage: python -m testkit.testhost up | down NAME", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
