"""Booted Debian machines (12 by default, or 13) on a private network: systemd-nspawn in network namespaces.

Unlike testkit/testhost.py (one machine sharing this host's network), every machine here lives in its
own network namespace, so its sshd, Redis, PostgreSQL, nginx and Flower never bind a port of this
machine. The layout, for a network named NAME with subnet 10.77.N.0/24:

    bridge NAME-br (10.77.N.1, in this machine's namespace)
      +-- veth NAME-vI  <->  eth0 in namespace NAME-<host>  (10.77.N.<10+I>), one per machine
      +-- namespaces without a machine ("outsiders"), for connections from outside an inventory
    nftables table inet soniquebay_testnet_NAME: masquerade of 10.77.N.0/24 (the machines reach the
    Debian mirrors); net.ipv4.ip_forward=1 while a network is up. No other table is touched.

Each machine is a fresh copy of the cached debootstrap tarball (testkit.testhost.rootfs_tarball()),
booted with `systemd-nspawn --boot --network-namespace-path=/run/netns/NAME-<host>`, driven over SSH
(sshd on its private address, port 22, a throwaway key) like a remote host. State lives under
/var/tmp/soniquebay-testnet/NAME/ (state.json names everything created), so a later run, `down`
or a killed run's successor removes it all:

    net = TestNet.create("sbt", subnet=0, machines=["db1", "worker1", "worker2"],
                         outsiders=["outsider"], binds={"worker1": {"/srv/music": music_dir}, ...})
    net.hosts["db1"].ssh("systemctl is-system-running")
    net.converge(inventory_dir)          # ansible-playbook playbooks/site.yml over SSH
    net.destroy()                        # machines, namespaces, veths, bridge, nft table, files

    python -m testkit.testnet down NAME    # remove a network left up (SONIQUEBAY_MULTIHOST_KEEP=1)
    python -m testkit.testnet list
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from testkit.testhost import (
    REPO,
    SOURCE_FILES,
    SUITE,
    Converge,
    TestHostError,
    _is_nspawn,
    _mounts_under,
    _run,
    _text,
    apt_sources,
    enter_cgroups,
    machine_cgroups,
    remove_machine_cgroups,
    rootfs_tarball,
)

NET_ROOT = Path(os.environ.get("SONIQUEBAY_TESTNET_DIR", "/var/tmp/soniquebay-testnet"))
TABLE_PREFIX = "soniquebay_testnet_"
FIRST_HOST = 10  # machine i gets 10.77.N.(10 + i); outsiders get 10.77.N.(99 - j)


class TestNetError(TestHostError):
    pass


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return _run(["ip", *args], check=check, timeout=30)


def _netns_list() -> list[str]:
    out = _ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _links() -> list[str]:
    out = _ip("-o", "link", "show", check=False).stdout
    return [m.group(1) for m in re.finditer(r"^\d+: ([^:@]+)[@:]", out, re.MULTILINE)]


def _nft_tables() -> list[str]:
    out = _run(["nft", "list", "tables"], check=False).stdout
    return [line.split()[-1] for line in out.splitlines() if line.startswith("table inet ")]


class NetHost:
    """One booted machine in its own network namespace."""

    __test__ = False

    def __init__(self, net: TestNet, name: str, address: str, binds: dict[str, str] | None = None):
        self.net = net
        self.name = name
        self.address = address
        self.machine = f"{net.name}-{name}"  # its nspawn machine and cgroup
        self.netns = self.machine
        self.workdir = net.workdir / "machines" / name
        self.root = self.workdir / "rootfs"
        self.console_log = self.workdir / "console.log"
        self.binds = dict(binds or {})
        self.proc: subprocess.Popen | None = None
        self.boots = 0

    # ---- life cycle ------------------------------------------------------------------------------

    def unpack(self, tarball: Path) -> None:
        self.workdir.mkdir(parents=True)
        self.root.mkdir()
        _run(
            ["tar", "--numeric-owner", "--xattrs", "--acls", "-C", str(self.root), "-xpf", str(tarball)],
            timeout=600,
        )
        self.root.chmod(0o755)
        root = self.root
        (root / "etc/hostname").write_text(self.name + "\n")
        others = "".join(f"{h.address}\t{h.name}\n" for h in self.net.hosts.values())
        (root / "etc/hosts").write_text(
            f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{others}"
        )
        (root / "etc/machine-id").write_text(os.urandom(16).hex() + "\n")
        (root / "etc/apt/sources.list").write_text(apt_sources(self.net.suite))
        (root / "etc/ssh/sshd_config.d/testnet.conf").write_text(
            f"ListenAddress {self.address}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\nUseDNS no\n"
        )
        ssh_dir = root / "root/.ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        authorized = ssh_dir / "authorized_keys"
        authorized.write_text(Path(str(self.net.key) + ".pub").read_text())
        authorized.chmod(0o600)
        (root / "etc/systemd/system/console-getty.service").symlink_to("/dev/null")

    def running(self) -> bool:
        pid = self.nspawn_pid()
        return pid is not None and _is_nspawn(pid)

    def nspawn_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int((self.workdir / "nspawn.pid").read_text())
        return None

    def boot(self, timeout: float = 180) -> None:
        if self.running():
            raise TestNetError(f"{self.name} is already running")
        with open(self.console_log, "a") as log:
            log.write(f"\n===== boot {self.boots + 1} =====\n")
            log.flush()
            argv = [
                "systemd-nspawn",
                "--quiet",
                "-D",
                str(self.root),
                f"--machine={self.machine}",
                f"--hostname={self.name}",
                "--keep-unit",
                "--register=no",
                "--boot",
                "--console=pipe",
                "--link-journal=no",
                "--resolv-conf=copy-host",
                "--timezone=off",
                f"--network-namespace-path=/run/netns/{self.netns}",
                # Its own namespace: network administration there (nftables) touches nothing of ours.
                "--capability=CAP_NET_ADMIN",
                *(f"--bind-ro={source}:{target}" for target, source in sorted(self.binds.items())),
            ]
            self.proc = subprocess.Popen(
                argv,
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
        while not _is_nspawn(self.proc.pid) and self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)

    def wait_booted(self, timeout: float = 180) -> None:
        """Wait until SSH answers and systemd finished booting."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running():
                raise TestNetError(f"{self.name}: systemd-nspawn exited:\n{self.console_tail()}")
            if self.ssh("true", check=False, timeout=10).returncode == 0:
                break
            if time.monotonic() > deadline:
                raise TestNetError(f"{self.name}: no SSH after {timeout} s:\n{self.console_tail()}")
            time.sleep(0.5)
        state = self.ssh(
            "systemctl is-system-running --wait", check=False, timeout=max(10, deadline - time.monotonic())
        )
        if state.stdout.strip() not in ("running", "degraded"):
            raise TestNetError(f"{self.name}: systemd did not finish booting: {state.stdout.strip()}")

    def wait_stopped(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.running():
            if self.proc is not None:
                self.proc.poll()
            if time.monotonic() > deadline:
                return False
            time.sleep(0.3)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        return True

    def pull_the_plug(self) -> None:
        """Power off at once, nothing stopped cleanly (like a host that dies): reboot(2) in the machine."""
        self.ssh("systemctl poweroff --force --force", check=False, timeout=10)
        if not self.wait_stopped(30):
            self.kill()

    def kill(self) -> None:
        pid = self.nspawn_pid()
        if pid is None or not _is_nspawn(pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)  # nspawn: orderly shutdown of the machine
        if not self.wait_stopped(60):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            self.wait_stopped(30)

    def shutdown(self) -> None:
        if self.running():
            self.ssh("systemctl poweroff", check=False, timeout=15)
            if not self.wait_stopped(60):
                self.kill()

    def console_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.console_log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    # ---- driving it ------------------------------------------------------------------------------

    def ssh_argv(self) -> list[str]:
        return [
            "ssh",
            *self.net.ssh_options(),
            f"root@{self.address}",
        ]

    def ssh(self, command: str, *, check: bool = True, timeout: float = 120, input: str | None = None):
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
                raise TestNetError(f"on {self.name}: {command!r} did not finish within {timeout} s") from exc
            return subprocess.CompletedProcess(exc.cmd, 124, _text(exc.stdout), _text(exc.stderr))
        if check and proc.returncode != 0:
            raise TestNetError(
                f"on {self.name}: {command!r} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n"
                f"{proc.stderr[-3000:]}"
            )
        return proc

    def main_pids(self, units: list[str]) -> dict[str, int]:
        out = self.ssh("systemctl show -P MainPID " + " ".join(units)).stdout.split()
        return dict(zip(units, map(int, out), strict=True))

    def units(self, pattern: str = "soniquebay-worker-*.service") -> dict[str, str]:
        """Units matching pattern that have a unit file -> active state (removed ones systemd still
        remembers, "not-found", are left out)."""
        out = self.ssh(f"systemctl list-units --all --plain --no-legend '{pattern}'").stdout
        rows = [line.split() for line in out.splitlines() if line.strip()]
        return {row[0]: row[2] for row in rows if row[1] != "not-found"}


class TestNet:
    """A bridge, NAT and machines in network namespaces. Create with TestNet.create(); destroy()."""

    __test__ = False

    def __init__(self, name: str, subnet: int, workdir: Path | None = None, suite: str = SUITE):
        if not re.fullmatch(r"[a-z][a-z0-9]{1,5}", name):
            raise TestNetError(
                f"network name {name!r}: 2-6 lower-case letters/digits (used in interface names)"
            )
        self.name = name
        self.subnet = subnet
        self.suite = suite
        self.prefix = f"10.77.{subnet}"
        self.gateway = f"{self.prefix}.1"
        self.bridge = f"{name}-br"
        self.table = TABLE_PREFIX + name
        self.workdir = workdir or NET_ROOT / name
        self.key = self.workdir / "id_ed25519"
        self.credentials_dir = self.workdir / "credentials"
        self.source_dir = self.workdir / "source"
        self.hosts: dict[str, NetHost] = {}
        self.outsiders: dict[str, str] = {}  # name -> address
        self.kept = False

    # ---- state -----------------------------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.workdir / "state.json"

    def save(self, owner: int | str | None = None) -> None:
        state = {
            "name": self.name,
            "subnet": self.subnet,
            "suite": self.suite,
            "owner": owner if owner is not None else self._state().get("owner", os.getpid()),
            "ip_forward_before": self._state().get("ip_forward_before"),
            "hosts": {h.name: {"address": h.address, "binds": h.binds} for h in self.hosts.values()},
            "outsiders": self.outsiders,
        }
        self.state_file.write_text(json.dumps(state, indent=2))

    def _state(self) -> dict:
        with contextlib.suppress(OSError, ValueError):
            return json.loads(self.state_file.read_text())
        return {}

    def ssh_options(self) -> list[str]:
        return [
            "-i",
            str(self.key),
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

    def address(self, index: int) -> str:
        return f"{self.prefix}.{FIRST_HOST + index}"

    # ---- life cycle ------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        name: str,
        *,
        subnet: int,
        machines: list[str],
        outsiders: list[str] = (),
        binds: dict[str, dict[str, str]] | None = None,
        owner: int | str | None = None,
        workdir: Path | None = None,
        suite: str = SUITE,
    ) -> TestNet:
        """Network, namespaces and machines of one release, booted in parallel and reachable over SSH."""
        cleanup_leftovers()
        net = cls(name, subnet, workdir, suite)
        if net.workdir.exists() or net._leftover_objects():
            destroy_net(name, net.workdir)
        net.workdir.mkdir(parents=True, mode=0o700)
        for index, host in enumerate(machines):
            net.hosts[host] = NetHost(net, host, net.address(index), (binds or {}).get(host))
        for index, outsider in enumerate(outsiders):
            net.outsiders[outsider] = f"{net.prefix}.{99 - index}"
        net.save(owner=owner if owner is not None else os.getpid())
        try:
            tarball = rootfs_tarball(suite)
            net._network_up()
            _run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}-throwaway", "-f", str(net.key)]
            )
            net._snapshot_source()
            for index, host in enumerate(net.hosts.values()):
                net._add_netns(host.name, host.address, index)
                host.unpack(tarball)
            for index, (outsider, address) in enumerate(net.outsiders.items()):
                net._add_netns(outsider, address, 50 + index)
            for host in net.hosts.values():
                for source in host.binds.values():
                    Path(source).mkdir(parents=True, exist_ok=True)
                    Path(source).chmod(0o755)
                host.boot()
            for host in net.hosts.values():
                host.wait_booted()
        except BaseException:
            net.destroy(force=True)
            raise
        return net

    @classmethod
    def attach(cls, name: str, workdir: Path | None = None) -> TestNet:
        """A network left up by an earlier run; machines powered off since are booted again."""
        net = cls(name, 0, workdir)
        state = net._state()
        if not state:
            raise TestNetError(f"no network {name} under {net.workdir}")
        net = cls(name, state["subnet"], workdir, state.get("suite", SUITE))
        for host, info in state["hosts"].items():
            net.hosts[host] = NetHost(net, host, info["address"], info.get("binds"))
        net.outsiders = dict(state.get("outsiders", {}))
        if net.table not in _nft_tables() or not all(
            f"{name}-{h}" in _netns_list() for h in [*net.hosts, *net.outsiders]
        ):
            raise TestNetError(f"network {name}: its namespaces or nftables table are gone")
        stopped = [h for h in net.hosts.values() if not h.running()]
        for host in stopped:  # powered off by a test: boot it again
            host.boot()
        for host in stopped:
            host.wait_booted()
        net.kept = True
        return net

    def _leftover_objects(self) -> bool:
        return (
            any(ns.startswith(self.name + "-") for ns in _netns_list())
            or self.bridge in _links()
            or self.table in _nft_tables()
        )

    def _network_up(self) -> None:
        state = self._state()
        state["ip_forward_before"] = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
        self.state_file.write_text(json.dumps(state, indent=2))
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        # Our own table only: masquerade the machines' traffic leaving by any other interface.
        ruleset = (
            f"table inet {self.table} {{\n"
            "  chain postrouting {\n"
            "    type nat hook postrouting priority srcnat; policy accept;\n"
            f'    ip saddr {self.prefix}.0/24 oifname != "{self.bridge}" masquerade\n'
            "  }\n"
            "}\n"
        )
        _run(["nft", "-f", "-"], input=ruleset)
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")

    def _add_netns(self, host: str, address: str, index: int) -> None:
        netns = f"{self.name}-{host}"
        veth = f"{self.name}-v{index}"
        _ip("netns", "add", netns)
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _ip("link", "set", veth, "master", self.bridge)
        _ip("link", "set", veth, "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        _ip("-n", netns, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")
        _ip("-n", netns, "route", "add", "default", "via", self.gateway)

    def _snapshot_source(self) -> None:
        """What the wheelhouse is built from, as it was when the network was created."""
        self.source_dir.mkdir()
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
        for name in SOURCE_FILES:
            path = REPO / name
            if path.is_dir():
                shutil.copytree(path, self.source_dir / name, ignore=ignore)
            elif path.exists():
                shutil.copy2(path, self.source_dir / name)

    def destroy(self, force: bool = False) -> None:
        if self.kept and not force:
            return
        destroy_net(self.name, self.workdir)

    # ---- driving it ------------------------------------------------------------------------------

    def in_netns(self, outsider: str, argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a command in an outsider's namespace (a machine on the network, not in any inventory)."""
        return subprocess.run(
            ["ip", "netns", "exec", f"{self.name}-{outsider}", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def ansible_env(self) -> dict[str, str]:
        venv_bin = Path(sys.executable).parent
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
        return env

    def host_vars(self, host: str) -> dict:
        """Connection settings of a machine, for an inventory."""
        return {
            "ansible_host": self.hosts[host].address,
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(self.key),
            "ansible_ssh_common_args": (
                "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
            ),
            "ansible_python_interpreter": "/usr/bin/python3",
        }

    def converge(
        self, inventory: Path, playbook: str = "playbooks/site.yml", *extra: str, timeout: float = 1800
    ) -> MultiConverge:
        venv_bin = Path(sys.executable).parent
        ansible_playbook = venv_bin / "ansible-playbook"
        if not ansible_playbook.exists():
            ansible_playbook = Path(shutil.which("ansible-playbook") or "ansible-playbook")
        argv = [
            str(ansible_playbook),
            "-i",
            str(inventory),
            str(REPO / playbook),
            "-e",
            f"soniquebay_credentials_dir={self.credentials_dir}",
            "-e",
            f"backend_worker_source_dir={self.source_dir}",
            *extra,
        ]
        started = time.monotonic()
        proc = subprocess.run(
            argv, cwd=REPO, env=self.ansible_env(), capture_output=True, text=True, timeout=timeout
        )
        output = proc.stdout + proc.stderr
        log = self.workdir / f"converge-{int(time.time())}.log"
        log.write_text(output)
        recaps: dict[str, dict[str, int]] = {}
        for host in self.hosts:
            match = re.search(rf"^{re.escape(host)}\s+:\s+(.*)$", output, re.MULTILINE)
            if match:
                recaps[host] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}
        return MultiConverge(proc.returncode, output, recaps, time.monotonic() - started, log)

    def credential(self, name: str) -> str:
        return (self.credentials_dir / name).read_text().strip()


class MultiConverge(Converge):
    def __init__(self, rc, output, recaps, seconds, log):
        super().__init__(rc, output, {})
        self.recaps = recaps
        self.seconds = seconds
        self.log = log

    @property
    def ok(self) -> bool:
        return (
            self.rc == 0
            and bool(self.recaps)
            and all(r.get("failed", 1) == 0 and r.get("unreachable", 1) == 0 for r in self.recaps.values())
        )


# --------------------------------------------------------------------------------------------------
# Cleanup, also of networks left by a killed run
# --------------------------------------------------------------------------------------------------


def destroy_net(name: str, workdir: Path | None = None) -> None:
    """Stop the machines and remove namespaces, veths, bridge, nft table and files of network NAME."""
    workdir = workdir or NET_ROOT / name
    state: dict = {}
    with contextlib.suppress(OSError, ValueError):
        state = json.loads((workdir / "state.json").read_text())
    machines = workdir / "machines"
    pids = []
    if machines.exists():
        for pidfile in machines.glob("*/nspawn.pid"):
            with contextlib.suppress(OSError, ValueError):
                pid = int(pidfile.read_text())
                if _is_nspawn(pid):
                    pids.append(pid)
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGTERM)  # an orderly shutdown of each machine
    deadline = time.monotonic() + 60
    while any(_is_nspawn(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in pids:
        if _is_nspawn(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    if machines.exists():
        for machine in machines.iterdir():
            remove_machine_cgroups(f"{name}-{machine.name}")
    for netns in _netns_list():
        if netns.startswith(name + "-"):
            # Anything still running in it (a killed run's leftovers) goes first.
            for pid in _ip("netns", "pids", netns, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            _ip("netns", "del", netns, check=False)
    for link in _links():
        if link.startswith(name + "-"):
            _ip("link", "del", link, check=False)
    table = TABLE_PREFIX + name
    if table in _nft_tables():
        _run(["nft", "delete", "table", "inet", table], check=False)
    # ip_forward back to what it was, unless another test network still needs it.
    before = state.get("ip_forward_before")
    if before == "0" and not any(t.startswith(TABLE_PREFIX) for t in _nft_tables()):
        with contextlib.suppress(OSError):
            Path("/proc/sys/net/ipv4/ip_forward").write_text("0\n")
    if workdir.exists():
        for point in _mounts_under(workdir):
            subprocess.run(["umount", "-l", point], capture_output=True)
        if _mounts_under(workdir):
            raise TestNetError(f"mounts left under {workdir}: {_mounts_under(workdir)}")
        shutil.rmtree(workdir, ignore_errors=True)


def cleanup_leftovers() -> None:
    """Remove networks whose owning process is gone (a run killed before its teardown); networks
    kept up on purpose (owner "kept") stay."""
    if not NET_ROOT.exists():
        return
    for workdir in NET_ROOT.iterdir():
        if not workdir.is_dir():
            continue
        try:
            owner = json.loads((workdir / "state.json").read_text())["owner"]
        except (OSError, ValueError, KeyError):
            owner = None
        if owner == "kept":
            continue
        with contextlib.suppress(TypeError, ValueError, ProcessLookupError, PermissionError):
            os.kill(int(owner), 0)
            continue
        destroy_net(workdir.name, workdir)


def main(argv: list[str]) -> int:
    if argv[:1] == ["list"]:
        for workdir in sorted(NET_ROOT.glob("*/state.json")):
            state = json.loads(workdir.read_text())
            hosts = ", ".join(f"{h} {i['address']}" for h, i in state["hosts"].items())
            print(f"{state['name']}: owner {state['owner']}: {hosts}")
        return 0
    if len(argv) == 2 and argv[0] == "down":
        destroy_net(argv[1])
        return 0
    print("usage: python -m testkit.testnet list | down NAME", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
