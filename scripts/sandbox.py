"""make sandbox / make sandbox-down: the whole stack on throwaway Debian 12 machines of this one.

    make sandbox              one machine running every tier (like inventory/local)
    make sandbox HOSTS=3      db1 (Redis, PostgreSQL, Flower) + worker1 + worker2 (inventory/example)
    make sandbox-down         remove everything it created

Each machine is a systemd-nspawn container booted from a debootstrap'ed Debian 12 (cached under
/var/cache/soniquebay/testhost) in its own network namespace on a private bridge (10.77.1.0/24,
NAT through an nftables table of its own), so nothing of it listens on this machine's ports.
The stack is deployed with playbooks/site.yml over SSH, exactly as on real servers; a small
generated sample library (/srv/music on the worker hosts) is scanned. State: /var/lib/soniquebay-sandbox.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from testkit.testnet import TestNet, TestNetError, destroy_net  # noqa: E402

STATE_DIR = Path("/var/lib/soniquebay-sandbox")
NAME = "sbox"
SUBNET = 1  # 10.77.1.0/24 (the multi-host tests use 10.77.0.0/24)
LIBRARY = "/srv/music"


def up(hosts: int) -> int:
    from testkit import audio_fixtures, multihost

    workdir = STATE_DIR / NAME
    if (workdir / "state.json").exists():
        print(f"A sandbox is already up ({workdir}); `make sandbox-down` removes it.", file=sys.stderr)
        print_summary(workdir)
        return 1
    music = STATE_DIR / "music"
    if hosts == 1:
        machines, workers, db = ["sandbox"], ["sandbox"], "sandbox"
    else:
        machines, workers, db = (
            [multihost.DB_HOST, *multihost.WORKER_HOSTS],
            list(multihost.WORKER_HOSTS),
            multihost.DB_HOST,
        )
    print(f"Booting {len(machines)} Debian 12 machine(s) on 10.77.{SUBNET}.0/24 ...", flush=True)
    STATE_DIR.mkdir(mode=0o755, exist_ok=True)
    net = TestNet.create(
        NAME,
        subnet=SUBNET,
        machines=machines,
        binds={host: {LIBRARY: str(music)} for host in workers},
        owner="kept",
        workdir=workdir,
    )
    try:
        print("Generating the sample library ...", flush=True)
        sample = music / "sample"
        expected = audio_fixtures.build_library(sample, artists=3, albums_per_artist=2, tracks_per_album=5)
        for path in [music, *music.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        inventory = workdir / "inventory"
        if hosts == 1:
            multihost.write_single_inventory(net, inventory, db)
        else:
            multihost.write_multihost_inventory(net, inventory)
        print(
            f"Deploying with playbooks/site.yml (a few minutes; log in {workdir}/converge-*.log) ...",
            flush=True,
        )
        result = net.converge(inventory)
        if not result.ok:
            print(result.tail(60), file=sys.stderr)
            print(
                f"\nThe deployment failed (full log: {result.log}). `make sandbox-down` removes the sandbox."
            )
            return 1
        print(
            f"Deployed in {result.seconds:.0f} s. Scanning {LIBRARY} ({len(expected)} files) ...", flush=True
        )
        scan = net.hosts[workers[0]].ssh(f"soniquebay scan {LIBRARY} --wait --json", check=False, timeout=600)
        session = json.loads(scan.stdout.strip().splitlines()[-1]) if scan.stdout.strip() else {}
        print(f"Scan {session.get('status', 'failed')}: {session.get('counts', scan.stderr.strip())}")
    except BaseException:
        print(f"Something failed; `make sandbox-down` removes what was created ({workdir}).", file=sys.stderr)
        raise
    (workdir / "summary.json").write_text(
        json.dumps(
            {
                "flower": f"https://{net.hosts[db].address}/flower/",
                "password": str(net.credentials_dir / "flower-admin"),
                "viewer": str(net.credentials_dir / "flower-viewer"),
                "certificate": str(net.credentials_dir / f"flower-certificate-{db}.pem"),
                "ssh": {h.name: f"ssh -i {net.key} root@{h.address}" for h in net.hosts.values()},
                "inventory": str(inventory),
                "workers": workers,
            },
            indent=2,
        )
    )
    print_summary(workdir)
    return 0


def print_summary(workdir: Path) -> None:
    try:
        summary = json.loads((workdir / "summary.json").read_text())
    except (OSError, ValueError):
        return
    print(
        f"\nFlower:   {summary['flower']}  (user admin, password in {summary['password']};\n"
        f"          read only: user viewer, password in {summary['viewer']})\n"
        f"          self-signed certificate: {summary['certificate']}\n"
        f"          curl --cacert {summary['certificate']} -u admin:$(cat {summary['password']}) "
        f"{summary['flower']}api/workers\n"
        "Machines:"
    )
    for host, command in summary["ssh"].items():
        print(f"  {host:8} {command}")
    print(
        f"Try:      {summary['ssh'][summary['workers'][0]]} soniquebay status\n"
        f"Redeploy: .venv/bin/ansible-playbook -i {summary['inventory']} playbooks/site.yml "
        f"-e soniquebay_credentials_dir={Path(summary['password']).parent}\n"
        "Remove:   make sandbox-down"
    )


def down() -> int:
    workdir = STATE_DIR / NAME
    try:
        destroy_net(NAME, workdir)
    except TestNetError as exc:
        print(exc, file=sys.stderr)
        return 1
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    print("Sandbox removed (machines, network namespaces, bridge, nftables table, files).")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sandbox", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("up")
    start.add_argument("--hosts", type=int, default=1, choices=[1, 3])
    sub.add_parser("down")
    args = parser.parse_args(argv)
    return up(args.hosts) if args.command == "up" else down()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
