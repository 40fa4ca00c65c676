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
    python -m testkit.testhost up     # boot + converge, prints its name; SONIQUEBAY_TESTHOST=<name>
    SONIQUEBAY_TESTHOST=<name> pytest tests/deploy -k ...   # attaches to it, leaves it running
    python -m testkit.testhost down <name>

Used by tests/deploy/conftest.py (one machine per pytest session); reusable by browser or fault tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from testkit.machine import (
    MACHINES_DIR,
    REPO,
    SUITE,
    Converge,
    Machine,
    MachineError,
    is_nspawn,
    make_ssh_key,
    play_recap,
    port_in_use,
    remove_machine_cgroups,
    remove_tree,
    rootfs_tarball,
    run_playbook,
    snapshot_source,
    ssh_options,
    stop_nspawn,
)

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


class TestHostError(MachineError):
    pass


def listener_of(port: int) -> str:
    proc = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True)
    return proc.stdout.strip() or "(unknown process)"


# --------------------------------------------------------------------------------------------------
# The machine
# --------------------------------------------------------------------------------------------------


class TestHost(Machine):
    """One booted systemd-nspawn machine. Create with TestHost.create(); always destroy()."""

    error = TestHostError
    label = "the test host"

    def __init__(self, name: str, workdir: Path, ssh_port: int):
        super().__init__(name, name, workdir)
        self.ssh_port = ssh_port
        self.key = workdir / "id_ed25519"
        self.credentials_dir = workdir / "credentials"
        self.inventory_dir = workdir / "inventory"
        # The app as it was when the machine was created: edits made during the run don't change
        # what converges deploy (a changed build restarts every worker).
        self.source_dir = workdir / "source"
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
            host.unpack(tarball)
            make_ssh_key(host.key, f"{name}-throwaway")
            # sshd on loopback only, on a port this machine does not use.
            host.configure(
                hosts=f"127.0.0.1\tlocalhost\n127.0.1.1\t{name}\n::1\tlocalhost ip6-localhost ip6-loopback\n",
                suite=SUITE,
                sshd_conf="testhost.conf",
                sshd_config=f"Port {ssh_port}\nListenAddress 127.0.0.1\n",
                key=host.key,
            )
            host._write_inventory()
            snapshot_source(host.source_dir)
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
        if not is_nspawn(pid):
            raise TestHostError(f"test host {name} is not running (nspawn pid {pid} is gone)")
        host = cls(name, workdir, ssh_port)
        host.kept = True
        host.boots = 1
        host._write_inventory()
        # Converges deploy the code as it is now.
        shutil.rmtree(host.source_dir, ignore_errors=True)
        snapshot_source(host.source_dir)
        return host

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
        self.start()
        self.wait_booted(timeout)

    def ssh_reachable(self) -> bool:
        return port_in_use(self.ssh_port)

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
        if self.proc is not None:
            self.shutdown(timeout=90)
        destroy_workdir(self.workdir)

    # ---- driving it ------------------------------------------------------------------------------

    def ssh_argv(self) -> list[str]:
        return ["ssh", *ssh_options(self.key), "-p", str(self.ssh_port), "root@127.0.0.1"]

    def converge(
        self,
        playbook: str = "playbooks/site.yml",
        *extra: str,
        release: Path | None = None,
        timeout: float = 1800,
    ) -> Converge:
        """ansible-playbook against this machine (generated passwords go to the run's credentials dir);
        with `release`, the playbook of that exported tree (testkit.releases.export_tree)."""
        proc, output, _ = run_playbook(
            self.workdir,
            self.inventory_dir,
            playbook,
            *extra,
            credentials_dir=self.credentials_dir,
            source_dir=self.source_dir,
            release=release,
            timeout=timeout,
        )
        return Converge(proc.returncode, output, play_recap(output, self.name))

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


def destroy_workdir(workdir: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        stop_nspawn([int((workdir / "nspawn.pid").read_text())])
    remove_machine_cgroups(workdir.name)
    remove_tree(workdir, TestHostError)


def cleanup_leftovers() -> None:
    """Remove machines whose owning test process is gone (a run killed before its teardown)."""
    if not MACHINES_DIR.exists():
        return
    for workdir in MACHINES_DIR.iterdir():
        if not workdir.is_dir() or workdir.name.startswith("debootstrap-"):
            continue
        try:
            owner_text = (workdir / "owner.pid").read_text().strip()
            if owner_text == "kept" and is_nspawn(int((workdir / "nspawn.pid").read_text())):
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
