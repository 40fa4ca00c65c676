"""Booted Debian machines (12 by default, or 13) on a private network: systemd-nspawn in network namespaces.

Unlike testkit/testhost.py (one machine sharing this host's network), every machine here lives in its
own network namespace, so its sshd, Redis, PostgreSQL, nginx and Flower never bind a port of this
machine. The layout, for a network named NAME with subnet 10.77.N.0/24:

    bridge NAME-br (10.77.N.1, in this machine's namespace)
      +-- veth NAME-vI  <->  eth0 in namespace NAME-<host>  (10.77.N.<10+I>), one per machine
      +-- namespaces without a machine ("outsiders"), for connections from outside an inventory
    nftables table inet soniquebay_testnet_NAME: masquerade of 10.77.N.0/24 (the machines reach the
    Debian mirrors); net.ipv4.ip_forward=1 while a network is up. No other table is touched.

Each machine is a fresh copy of the cached debootstrap tarball (testkit.machine.rootfs_tarball()),
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
import signal
import subprocess
import sys
import time
from pathlib import Path

from testkit.machine import (
    SUITE,
    Converge,
    Machine,
    MachineError,
    make_ssh_key,
    play_recap,
    remove_machine_cgroups,
    remove_tree,
    rootfs_tarball,
    run,
    run_playbook,
    snapshot_source,
    ssh_options,
    stop_nspawn,
)

NET_ROOT = Path(os.environ.get("SONIQUEBAY_TESTNET_DIR", "/var/tmp/soniquebay-testnet"))
TABLE_PREFIX = "soniquebay_testnet_"
FIRST_HOST = 10  # machine i gets 10.77.N.(10 + i); outsiders get 10.77.N.(99 - j)


class TestNetError(MachineError):
    pass


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(["ip", *args], check=check, timeout=30)


def _netns_list() -> list[str]:
    out = _ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _links() -> list[str]:
    out = _ip("-o", "link", "show", check=False).stdout
    return [m.group(1) for m in re.finditer(r"^\d+: ([^:@]+)[@:]", out, re.MULTILINE)]


def _nft_tables() -> list[str]:
    out = run(["nft", "list", "tables"], check=False).stdout
    return [line.split()[-1] for line in out.splitlines() if line.startswith("table inet ")]


class NetHost(Machine):
    """One booted machine in its own network namespace."""

    error = TestNetError

    def __init__(self, net: TestNet, name: str, address: str, binds: dict[str, str] | None = None):
        super().__init__(name, f"{net.name}-{name}", net.workdir / "machines" / name)
        self.net = net
        self.address = address
        self.netns = self.machine
        self.binds = dict(binds or {})

    @property
    def label(self) -> str:
        return self.name

    # ---- life cycle ------------------------------------------------------------------------------

    def unpack(self, tarball: Path) -> None:
        self.workdir.mkdir(parents=True)
        super().unpack(tarball)
        others = "".join(f"{h.address}\t{h.name}\n" for h in self.net.hosts.values())
        self.configure(
            hosts=f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{others}",
            suite=self.net.suite,
            sshd_conf="testnet.conf",
            sshd_config=f"ListenAddress {self.address}\n",
            key=self.net.key,
        )

    def boot(self, timeout: float = 180) -> None:
        """Start the machine; wait_booted() waits for it (so machines boot in parallel)."""
        self.start(
            f"--hostname={self.name}",
            f"--network-namespace-path=/run/netns/{self.netns}",
            # Its own namespace: network administration there (nftables) touches nothing of ours.
            "--capability=CAP_NET_ADMIN",
            *(f"--bind-ro={source}:{target}" for target, source in sorted(self.binds.items())),
        )

    def pull_the_plug(self) -> None:
        """Power off at once, nothing stopped cleanly (like a host that dies): reboot(2) in the machine."""
        self.ssh("systemctl poweroff --force --force", check=False, timeout=10)
        if not self.wait_stopped(30):
            self.kill()

    # ---- driving it ------------------------------------------------------------------------------

    def ssh_argv(self) -> list[str]:
        return ["ssh", *ssh_options(self.net.key), f"root@{self.address}"]

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
            make_ssh_key(net.key, f"{name}-throwaway")
            snapshot_source(net.source_dir)
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
        run(["nft", "-f", "-"], input=ruleset)
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
        self,
        inventory: Path,
        playbook: str = "playbooks/site.yml",
        *extra: str,
        release: Path | None = None,
        timeout: float = 1800,
    ) -> MultiConverge:
        """ansible-playbook against the machines of `inventory`; with `release`, the playbook of that
        exported tree (testkit.releases.export_tree)."""
        started = time.monotonic()
        proc, output, log = run_playbook(
            self.workdir,
            inventory,
            playbook,
            *extra,
            credentials_dir=self.credentials_dir,
            source_dir=self.source_dir,
            release=release,
            timeout=timeout,
        )
        recaps = {host: recap for host in self.hosts if (recap := play_recap(output, host))}
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
    for pidfile in machines.glob("*/nspawn.pid") if machines.exists() else ():
        with contextlib.suppress(OSError, ValueError):
            pids.append(int(pidfile.read_text()))
    stop_nspawn(pids)
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
        run(["nft", "delete", "table", "inet", table], check=False)
    # ip_forward back to what it was, unless another test network still needs it.
    before = state.get("ip_forward_before")
    if before == "0" and not any(t.startswith(TABLE_PREFIX) for t in _nft_tables()):
        with contextlib.suppress(OSError):
            Path("/proc/sys/net/ipv4/ip_forward").write_text("0\n")
    if workdir.exists():
        remove_tree(workdir, TestNetError)


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
