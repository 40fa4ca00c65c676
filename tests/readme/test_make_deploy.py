"""`make deploy` run as the README says, inside a fresh Debian 13 (trixie) machine: the project
copied in from a `git archive` of HEAD, `make` installed, then `make deploy` provisions the machine
it runs on (its own venv, wheelhouse and inventory/local). The Debian 12 deployment is covered in
depth by tests/deploy; this proves the second supported release and the README's own command.

The machine lives in a network namespace of its own (testkit/testnet.py), so it can run while the
Debian 12 test host holds this machine's ports. It reaches the package registries through this
machine's NAT with this machine's own trust settings (CA bundle, pip's configuration) copied in.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from testkit import audio_fixtures
from testkit.deploy.layout import ALL_UNITS, expected_layout
from testkit.stack import (
    expected_rows,
    http,
    psql,
    soniquebay_json,
    tracks_under,
    trust,
    wait_flower_workers,
    wait_tracks_under,
    write_slowly,
)
from testkit.testnet import NetHost, TestNet

pytestmark = [pytest.mark.readme, pytest.mark.timeout(3600)]

REPO = Path(__file__).resolve().parents[2]
NET_NAME = "sbr"
SUBNET = 2  # 10.77.2.0/24: the multi-host tests use .0, make sandbox .1
HOST = "trixie"
PROJECT = "/root/soniquebay"
LIBRARY = "/srv/music"
# The controller's trust settings, needed where the registries are reached through a proxy.
TRUST_FILES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pip.conf")


def recap(output: str) -> dict[str, int]:
    match = re.search(r"^localhost\s+:\s+(.*)$", output, re.MULTILINE)
    assert match, f"no PLAY RECAP for localhost in:\n{output[-3000:]}"
    return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", match.group(1))}


def make_deploy(machine: NetHost) -> subprocess.CompletedProcess:
    return machine.ssh(f"cd {PROJECT} && make deploy", check=False, timeout=2400)


@pytest.fixture(scope="module")
def machine():
    net = TestNet.create(NET_NAME, subnet=SUBNET, machines=[HOST], suite="trixie")
    try:
        yield net.hosts[HOST]
    finally:
        net.destroy()


@pytest.fixture(scope="module")
def library(machine) -> list[dict]:
    """A user's music, in place before the deployment."""
    staging = machine.root / LIBRARY.lstrip("/")
    expected = audio_fixtures.build_library(
        staging / "albums", artists=3, albums_per_artist=3, tracks_per_album=6, seconds=0.5, seed=13
    )
    subprocess.run(["chmod", "-R", "a+rX", str(staging)], check=True)
    return expected


@pytest.fixture(scope="module")
def first_deploy(machine, library) -> subprocess.CompletedProcess:
    """The README's steps: the project in a folder, `make` installed, `make deploy` as root."""
    target = machine.root / PROJECT.lstrip("/")
    target.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "HEAD"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    for name in TRUST_FILES:
        if Path(name).exists():
            shutil.copyfile(name, machine.root / name.lstrip("/"))
    machine.ssh(
        "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq make", timeout=600
    )
    return make_deploy(machine)


def test_the_machine_is_a_fresh_debian_13(machine):
    release = machine.ssh(". /etc/os-release && echo $VERSION_ID $VERSION_CODENAME").stdout.split()
    assert release == ["13", "trixie"], release


def test_make_deploy_provisions_it_and_says_where_the_password_is(machine, first_deploy):
    output = first_deploy.stdout + first_deploy.stderr
    assert first_deploy.returncode == 0, output[-5000:]
    assert recap(output)["failed"] == 0
    assert "SoniqueBay is deployed." in output
    assert f"Log in as admin with the password in {PROJECT}/credentials/flower-admin" in output
    assert f"or read only as viewer with the password in {PROJECT}/credentials/flower-viewer." in output
    copy = f"{PROJECT}/credentials/flower-certificate-localhost.pem"
    fingerprint = machine.ssh(f"openssl x509 -in {copy} -noout -fingerprint -sha256").stdout
    fingerprint = fingerprint.split("=", 1)[1].strip()
    assert f"Certificate of localhost: {fingerprint} (SHA-256" in output
    mode = machine.ssh(f"stat -c %a {PROJECT}/credentials/flower-admin").stdout.strip()
    assert mode == "600"
    states = machine.ssh("systemctl is-active " + " ".join(ALL_UNITS), check=False).stdout.split()
    assert dict(zip(ALL_UNITS, states, strict=True)) == dict.fromkeys(ALL_UNITS, "active")
    # The release's own servers: PostgreSQL 17, Redis 8 (Valkey is not what Debian 13 ships as redis).
    versions = machine.ssh("psql --version; redis-server --version").stdout
    assert "(PostgreSQL) 17." in versions and "Redis server v=8." in versions, versions


def test_flower_shows_the_eight_workers_with_their_layout_behind_the_password(
    machine, first_deploy, tmp_path
):
    flower = f"https://{machine.address}/flower/"
    certificate = tmp_path / "flower.pem"
    certificate.write_text(machine.ssh(f"cat {PROJECT}/credentials/flower-certificate-localhost.pem").stdout)
    trust(certificate)
    admin = ("admin", machine.ssh(f"cat {PROJECT}/credentials/flower-admin").stdout.strip())
    assert http(flower)[0] == 401
    assert http(flower, auth=("admin", "wrong-password-123"))[0] == 401
    assert http(flower, auth=admin)[0] == 200
    layout = expected_layout()
    workers = wait_flower_workers(flower, admin, {f"{name}@{HOST}" for name in layout})
    assert sorted(workers) == sorted(f"{name}@{HOST}" for name in layout)
    for name, (queue, concurrency, prefetch) in layout.items():
        info = workers[f"{name}@{HOST}"]
        assert [q["name"] for q in info["active_queues"]] == [queue], name
        assert info["stats"]["pool"]["max-concurrency"] == concurrency, name
        assert info["stats"]["prefetch_count"] == prefetch, name


def test_a_scan_lands_the_exact_rows(machine, first_deploy, library):
    session = soniquebay_json(machine, "scan", LIBRARY, "--wait", "--json")
    assert session["status"] == "completed", session
    counts = session["counts"]
    assert counts["discovered"] == counts["inserted"] == len(library) and counts["errors"] == 0, session
    rows = psql(
        machine, "SELECT path, coalesce(title, ''), coalesce(artist, '') FROM present_tracks ORDER BY path"
    )
    staging = machine.root / LIBRARY.lstrip("/") / "albums"
    assert rows == expected_rows(library, staging, f"{LIBRARY}/albums")


def test_the_watch_and_the_daily_timer_are_on(machine, first_deploy):
    units = machine.ssh("systemctl is-active soniquebay-watch.service soniquebay-scan.timer").stdout.split()
    assert units == ["active", "active"]
    shown = machine.ssh(
        "systemctl show -p TimersCalendar -p RandomizedDelayUSec -p Persistent soniquebay-scan.timer"
    ).stdout
    assert "OnCalendar=*-*-* 03:00:00" in shown and "RandomizedDelayUSec=30min" in shown, shown
    assert "Persistent=yes" in shown, shown
    # The next run: the next 03:00 (UTC here), at most the randomized delay later.
    now, elapse = map(int, machine.ssh(
        "date +%s; date -d \"$(systemctl show -P NextElapseUSecRealtime soniquebay-scan.timer)\" +%s"
    ).stdout.split())  # fmt: skip
    today_3am = now - now % 86400 + 3 * 3600
    next_3am = today_3am if today_3am > now else today_3am + 86400
    assert next_3am <= elapse <= next_3am + 1800, (now, elapse)


def test_new_music_shows_up_by_itself_and_leaves_when_deleted(machine, first_deploy, tmp_path):
    """Nobody runs a scan: the watch sees the copy, waits for the quiet period (10 s), scans."""
    staging = tmp_path / "new album"
    audio_fixtures.build_library(staging, artists=1, albums_per_artist=1, tracks_per_album=10, seed=5)
    subprocess.run(["chmod", "-R", "a+rX", str(staging)], check=True)
    folder = f"{LIBRARY}/incoming"
    shutil.copytree(staging, machine.root / folder.lstrip("/"))
    seconds = wait_tracks_under(machine, folder, 10)
    print(f"10 files copied in: tracks after {seconds:.1f} s")
    # Renamed: the tracks follow their files, ids kept (the app's playlists hold them), within 30 s.
    ids = (
        "SELECT id, album_id, artist_id, path FROM present_tracks "
        f"WHERE starts_with(path, '{LIBRARY}/') ORDER BY id"
    )
    before = psql(machine, ids)
    renamed = f"{LIBRARY}/incoming (2019)"
    (machine.root / folder.lstrip("/")).rename(machine.root / renamed.lstrip("/"))
    seconds = wait_tracks_under(machine, renamed, 10)
    print(f"their folder renamed: at the new paths after {seconds:.1f} s")
    assert psql(machine, ids) == [[*row[:3], row[3].replace(folder + "/", renamed + "/")] for row in before]
    folder = renamed
    shutil.rmtree(machine.root / folder.lstrip("/"))
    seconds = wait_tracks_under(machine, folder, 0)
    print(f"their folder deleted: gone (missing) after {seconds:.1f} s")
    # The rest of the library is untouched, and the sessions say who started them.
    assert tracks_under(machine, f"{LIBRARY}/albums") == 54
    status = machine.ssh("soniquebay status --limit 5").stdout.splitlines()
    ours = [line for line in status if line.endswith((f" {folder}", f" {LIBRARY}"))]
    assert len(ours) >= 2 and all(" completed watch " in line for line in ours[:2]), status


def test_a_file_written_slowly_is_imported_once_complete(machine, first_deploy, tmp_path):
    (expected,) = audio_fixtures.build_library(
        tmp_path / "slow", artists=1, albums_per_artist=1, tracks_per_album=1, formats=("mp3",), seconds=20
    )
    folder = f"{LIBRARY}/slow"
    target = machine.root / folder.lstrip("/") / Path(expected["path"]).name
    target.parent.mkdir()
    target.parent.chmod(0o755)
    before = int(psql(machine, "SELECT count(*) FROM scan_sessions WHERE origin = 'watch'")[0][0])
    write_slowly(target, Path(expected["path"]).read_bytes(), seconds=20)
    target.chmod(0o644)
    final = target.stat()
    wait_tracks_under(machine, folder, 1)
    time.sleep(12)  # a second session (the file read early, then again) would have started by now
    rows = psql(
        machine,
        f"SELECT size, mtime_ns, title, length FROM present_tracks WHERE starts_with(path, '{folder}/')",
    )
    [(size, mtime_ns, title, length)] = rows
    assert (size, mtime_ns, title) == (str(final.st_size), str(final.st_mtime_ns), expected["title"]), rows
    assert abs(float(length) - 20) < 0.5, rows  # the whole file: 20 s of audio
    sessions = psql(
        machine,
        "SELECT extracted, errors FROM scan_sessions WHERE origin = 'watch' "
        f"ORDER BY started_at OFFSET {before}",
    )
    assert sessions == [["1", "0"]], sessions


def test_the_timer_scan_runs_and_leaves_a_running_session_alone(machine, first_deploy):
    busy = "00000000-0000-4000-8000-00000000abcd"
    psql(machine, f"INSERT INTO scan_sessions (id, roots) VALUES ('{busy}', '{{{LIBRARY}}}')")
    since = machine.ssh("date '+%Y-%m-%d %H:%M:%S'").stdout.strip()
    machine.ssh("systemctl start soniquebay-scan.service")  # a oneshot: returns once it ran
    journal = machine.ssh(f"journalctl -u soniquebay-scan.service --since '{since}' -o cat").stdout
    assert f"{LIBRARY}: session {busy} is already scanning it; not scanning it again" in journal, journal
    assert machine.ssh("systemctl show -P Result soniquebay-scan.service").stdout.strip() == "success"
    assert psql(machine, "SELECT count(*) FROM scan_sessions WHERE origin = 'timer'") == [["0"]]
    psql(
        machine,
        f"UPDATE scan_sessions SET status = 'failed', phase = 'closed', ended_at = now() WHERE id = '{busy}'",
    )
    machine.ssh("systemctl start soniquebay-scan.service")
    deadline = time.monotonic() + 120
    query = "SELECT status, roots FROM scan_sessions WHERE origin = 'timer'"
    while (timer := psql(machine, query)) != [["completed", f"{{{LIBRARY}}}"]]:
        assert time.monotonic() < deadline, timer
        time.sleep(0.5)
    # The exporter says how long ago the root was last scanned in full.
    fetch = "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9808/metrics').read().decode())"
    metrics = machine.ssh(f'python3 -c "{fetch}"').stdout
    sample = f'soniquebay_last_completed_scan_age_seconds{{root="{LIBRARY}"}} '
    (age,) = [line.split()[-1] for line in metrics.splitlines() if line.startswith(sample)]
    assert 0 <= float(age) < 120, age


def test_a_schedule_systemd_does_not_understand_fails_naming_it(machine, first_deploy):
    bad = machine.ssh(
        f"""cd {PROJECT} && scripts/deploy.sh -e '{{"backend_worker_scan_schedule": "every tuesday"}}'""",
        check=False,
        timeout=2400,
    )
    output = bad.stdout + bad.stderr
    assert bad.returncode != 0, output[-3000:]
    words = " ".join(output.split())
    assert 'backend_worker_scan_schedule="every tuesday" is not understood by systemd' in words, output[
        -3000:
    ]
    assert recap(output)["changed"] == 0, re.findall(r"^changed: .*$", output, re.MULTILINE)
    shown = machine.ssh("systemctl show -p TimersCalendar soniquebay-scan.timer").stdout
    assert "OnCalendar=*-*-* 03:00:00" in shown, shown


def test_a_second_make_deploy_changes_nothing(machine, first_deploy):
    second = make_deploy(machine)
    output = second.stdout + second.stderr
    assert second.returncode == 0, output[-5000:]
    assert recap(output)["changed"] == 0, re.findall(r"^changed: .*$", output, re.MULTILINE)


# ---- make uninstall (playbooks/uninstall.yml), last: it takes the deployment away -----------------

SECRETS = (
    "/etc/soniquebay/soniquebay.env",
    "/etc/soniquebay/flower.env",
    "/etc/soniquebay/exporter.env",
    "/etc/redis/soniquebay-users.acl",
    "/usr/local/sbin/soniquebay",
)
INOTIFY_LIMITS = "/etc/sysctl.d/60-soniquebay-inotify.conf"  # on the watch host
DATA = ("/var/lib/soniquebay", "/var/lib/soniquebay-flower", "/var/backups/soniquebay")


def make_uninstall(machine: NetHost, args: str = "") -> subprocess.CompletedProcess:
    return machine.ssh(f"cd {PROJECT} && make uninstall {args}", check=False, timeout=900)


def existing(machine: NetHost, paths) -> list[str]:
    return [path for path in paths if (machine.root / path.lstrip("/")).exists()]


def library_files(machine: NetHost) -> dict[str, tuple[int, int, str]]:
    root = machine.root / LIBRARY.lstrip("/")
    return {
        str(path.relative_to(root)): (
            path.stat().st_size,
            path.stat().st_mtime_ns,
            hashlib.sha256(path.read_bytes()).hexdigest(),
        )
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_make_uninstall_removes_the_services_and_keeps_the_data(machine, first_deploy):
    tracks = psql(machine, "SELECT id, path FROM tracks ORDER BY id")
    assert tracks and existing(machine, [*SECRETS, INOTIFY_LIMITS]) == [*SECRETS, INOTIFY_LIMITS]
    started = time.monotonic()
    proc = make_uninstall(machine)
    output = proc.stdout + proc.stderr
    print(f"make uninstall: {time.monotonic() - started:.0f} s")
    assert proc.returncode == 0, output[-5000:]
    words = " ".join(output.split())
    assert (
        "Kept on localhost: the database soniquebay and its roles soniquebay and soniquebay_owner in the "
        "PostgreSQL 17" in words
    ), words[-3000:]
    assert "Kept on localhost: the covers in /var/lib/soniquebay/covers" in words
    units = machine.ssh(
        "systemctl list-unit-files 'soniquebay*' --no-legend; "
        "systemctl list-units --all --plain --no-legend 'soniquebay*'",
        check=False,
    )
    assert units.stdout.strip() == "", units.stdout
    ports = {int(line.split()[3].rsplit(":", 1)[1]) for line in machine.ssh("ss -Hltn").stdout.splitlines()}
    assert ports.isdisjoint({5555, 9808, 80, 443}), (
        ports
    )  # Flower, the exporter, nginx (nothing left to serve)
    assert (
        existing(machine, [*SECRETS, INOTIFY_LIMITS, "/opt/soniquebay", "/etc/redis/soniquebay.conf"]) == []
    )
    assert (
        machine.ssh("systemctl is-active redis-server postgresql prometheus").stdout.split() == ["active"] * 3
    )
    assert psql(machine, "SELECT id, path FROM tracks ORDER BY id") == tracks
    assert existing(machine, DATA[:2]) == list(DATA[:2])
    again = make_uninstall(machine)
    assert again.returncode == 0, (again.stdout + again.stderr)[-5000:]
    assert recap(again.stdout)["changed"] == 0, re.findall(r"^changed: .*$", again.stdout, re.MULTILINE)


def test_make_uninstall_with_the_data_removes_it_and_never_the_library(machine, first_deploy):
    library = library_files(machine)
    assert library
    bad = make_uninstall(machine, "ARGS='-e soniquebay_uninstall_data=maybe'")
    assert bad.returncode != 0 and recap(bad.stdout)["changed"] == 0
    words = " ".join((bad.stdout + bad.stderr).split())
    assert 'soniquebay_uninstall_data="maybe" must be true' in words, words[-3000:]
    proc = make_uninstall(machine, "ARGS='-e soniquebay_uninstall_data=true'")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-5000:]
    assert "Kept on" not in output
    as_postgres = "runuser -u postgres -- psql -XAt -c"
    found = machine.ssh(
        f"{as_postgres} \"SELECT count(*) FROM pg_database WHERE datname = 'soniquebay'\"; "
        f"{as_postgres} \"SELECT count(*) FROM pg_roles WHERE rolname = 'soniquebay'\""
    ).stdout.split()
    assert found == ["0", "0"]
    assert machine.ssh("redis-cli -n 0 dbsize").stdout.strip() == "0"
    assert existing(machine, DATA) == []
    assert machine.ssh("getent passwd soniquebay; getent group soniquebay", check=False).stdout == ""
    assert library_files(machine) == library
    assert recap(make_uninstall(machine, "ARGS='-e soniquebay_uninstall_data=true'").stdout)["changed"] == 0
