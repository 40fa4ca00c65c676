"""Checks of a deployed stack from outside, as an operator makes them: Flower through nginx, psql and
the `soniquebay` command over SSH. For any machine with an `ssh()` method: the single test host
(testkit/testhost.py) or a machine of a test network (testkit/testnet.py)."""

from __future__ import annotations

import base64
import json
import shlex
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

# HTTPS clients of the tests verify certificates: the system's authorities plus the certificates
# of the deployments under test (trust()), as an operator's browser trusts them once imported.
_TLS = ssl.create_default_context()


def trust(certificate) -> None:
    """Trust a deployment's certificate (the copy the nginx role leaves on the controller)."""
    _TLS.load_verify_locations(cafile=str(certificate))


def http(
    url: str,
    auth: tuple[str, str] | None = None,
    timeout: float = 30,
    method: str = "GET",
) -> tuple[int, dict, bytes]:
    """A request without following redirects: (status, headers, body)."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    opener = urllib.request.build_opener(NoRedirect, urllib.request.HTTPSHandler(context=_TLS))
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def wait_flower_workers(flower: str, auth: tuple[str, str], expect: set[str], timeout: float = 120) -> dict:
    """Flower's /api/workers once every expected worker (name@host) is alive (its heartbeats reach
    Flower) and has answered with its stats; fails at the deadline naming the missing ones.
    Stats alone prove nothing: Flower keeps a stopped worker's last answer."""
    deadline = time.monotonic() + timeout
    online: set[str] = set()
    last = ""
    while True:
        status, _, body = http(flower + "api/workers?status=1", auth=auth)
        if status == 200:
            online = {name for name, alive in json.loads(body).items() if alive}
            if expect <= online:
                status, _, body = http(flower + "api/workers?refresh=1", auth=auth)
                workers = json.loads(body) if status == 200 else {}
                if all(workers.get(name, {}).get("stats") for name in expect):
                    return workers
        last = f"HTTP {status}"
        if time.monotonic() > deadline:
            raise AssertionError(
                f"Flower ({flower}) after {timeout} s: workers not alive {sorted(expect - online)}; "
                f"alive {sorted(online)}; last answer {last}"
            )
        time.sleep(3)


def psql(host, sql: str) -> list[list[str]]:
    """Rows of a query on the machine's `soniquebay` database, as postgres, tab-separated fields."""
    proc = host.ssh(f"runuser -u postgres -- psql -d soniquebay -XAt -F '\t' -c {shlex.quote(sql)}")
    return [line.split("\t") for line in proc.stdout.splitlines() if line]


def soniquebay_json(host, *args: str, timeout: float = 600) -> dict:
    """`soniquebay ARGS` on the machine; its last line parsed as JSON (use with --json)."""
    command = "soniquebay " + " ".join(map(shlex.quote, args))
    proc = host.ssh(command, check=False, timeout=timeout)
    assert proc.returncode == 0 and proc.stdout.strip(), (
        f"{command} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def tracks_under(host, folder: str) -> int:
    """How many tracks the machine's library holds under `folder`."""
    return int(psql(host, f"SELECT count(*) FROM present_tracks WHERE starts_with(path, '{folder}/')")[0][0])


def wait_tracks_under(host, folder: str, count: int, timeout: float = 30) -> float:
    """Seconds until the library holds `count` tracks under folder; fails at the deadline."""
    return wait_count(lambda: tracks_under(host, folder), count, timeout, f"tracks under {folder}")


def expected_rows(expected: list[dict], staging: Path, prefix: str) -> list[list[str]]:
    """(path, title, artist) of generated files (testkit.audio_fixtures) as the machine sees them under
    `prefix`, sorted like `SELECT path, coalesce(title, ''), coalesce(artist, '') ... ORDER BY path`."""
    return sorted(
        [f"{prefix}/{Path(e['path']).relative_to(staging)}", e["title"] or "", e["artist"] or ""]
        for e in expected
    )


def write_slowly(path, data: bytes, seconds: float = 20, writes: int = 40) -> None:
    """A file written as a slow copy writes it: `writes` writes spread over `seconds`, then closed."""
    chunk = len(data) // writes + 1
    with open(path, "wb") as out:
        for start in range(0, len(data), chunk):
            out.write(data[start : start + chunk])
            out.flush()
            time.sleep(seconds / writes)


def wait_count(count, expected: int, timeout: float, what: str) -> float:
    """Seconds until count() returns expected; fails at the deadline naming `what` and the count."""
    started = time.monotonic()
    while (now := count()) != expected:
        assert time.monotonic() - started < timeout, f"{now} {what}, not {expected}, after {timeout} s"
        time.sleep(0.3)
    return time.monotonic() - started
