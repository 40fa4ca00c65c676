"""A broker between hosts as deployed: Redis speaking TLS only, its certificate from a private CA
(IP address in subjectAltName), the app on rediss:// with SONIQUEBAY_BROKER_CA. A worker and
`celery inspect` talk through it; a wrong CA, a wrong name and a plain client are refused, each
saying why."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import redis

from testkit import services

pytestmark = pytest.mark.integration


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(directory: Path, name: str) -> None:
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
            "-keyout", f"{name}.key", "-out", f"{name}.crt", "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
            cwd=directory)  # fmt: skip


@pytest.fixture(scope="module")
def tls_broker():
    """A TLS-only redis-server (the plain port off) with a certificate for 127.0.0.1 only, signed by
    `ca`; `other-ca` signed nothing here."""
    workdir = services.shared_tempdir("soniquebay-tlsredis-")
    make_ca(workdir, "ca")
    make_ca(workdir, "other-ca")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "server.key",
            "-out", "server.csr", "-subj", "/CN=127.0.0.1", cwd=workdir)  # fmt: skip
    (workdir / "san.ext").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "san.ext", "-out", "server.crt", cwd=workdir)  # fmt: skip
    for path in workdir.iterdir():
        path.chmod(0o644)
    port = services.free_port()
    argv = ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
            "--tls-cert-file", str(workdir / "server.crt"), "--tls-key-file", str(workdir / "server.key"),
            "--tls-ca-cert-file", str(workdir / "ca.crt"), "--tls-auth-clients", "no",
            "--dir", str(workdir), "--save", "", "--appendonly", "no",
            "--logfile", str(workdir / "redis.log")]  # fmt: skip
    try:
        with services.process_listening(argv, port):
            yield workdir, port
    finally:
        subprocess.run(["rm", "-rf", str(workdir)], check=False)


def tls_env(workdir: Path, port: int, host: str = "127.0.0.1", ca: str = "ca.crt") -> dict[str, str]:
    return {
        **os.environ,
        "SONIQUEBAY_BROKER_URL": f"rediss://{host}:{port}/0",
        "SONIQUEBAY_BROKER_CA": str(workdir / ca),
    }


def test_workers_and_clients_use_the_broker_over_verified_tls(services_up, tls_broker, tmp_path):
    workdir, port = tls_broker
    env = tls_env(workdir, port)
    log = workdir / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            ["setpriv", f"--reuid={services.WORKER_USER}", "--regid=nogroup", "--clear-groups",
             str(services.VENV_BIN / "celery"), "-A", "backend_worker", "worker", "-Q", "deferred", "-c", "1",
             "-n", "tls@%h", "--loglevel", "INFO", "--without-mingle", "--without-gossip"],
            cwd="/", env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        celery = str(services.VENV_BIN / "celery")
        inspect = [celery, "-A", "backend_worker", "inspect", "ping", "--timeout", "2"]
        while True:
            ping = subprocess.run(inspect, env=env, capture_output=True, text=True)
            if "tls@" in ping.stdout and "pong" in ping.stdout:
                break
            assert worker.poll() is None, log.read_text()
            assert time.monotonic() < deadline, ping.stdout + ping.stderr + log.read_text()
        assert f"Connected to rediss://:**@127.0.0.1:{port}/0" in log.read_text()
    finally:
        services.stop_process_groups([worker])
    # The exporter's and the reconciler's client: TLS as the workers'.
    code = "from backend_worker import config; print(config.broker_client(config.settings()).ping())"
    python = str(services.VENV_BIN / "python")
    client = subprocess.run([python, "-c", code], env=env, capture_output=True, text=True)
    assert client.stdout.strip() == "True", client.stderr


@pytest.mark.parametrize(
    ("case", "cause"),
    [("wrong-ca", "certificate verify failed"), ("wrong-name", "certificate verify failed")],
)
def test_a_client_refuses_a_broker_it_cannot_verify_and_says_why(db_conn, tls_broker, library, case, cause):
    workdir, port = tls_broker
    env = {
        "wrong-ca": tls_env(workdir, port, ca="other-ca.crt"),
        "wrong-name": tls_env(workdir, port, host="localhost"),
    }
    proc = subprocess.run(
        [str(services.VENV_BIN / "soniquebay"), "scan", str(library)],
        env=env[case], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    host = "localhost" if case == "wrong-name" else "127.0.0.1"
    assert f"soniquebay: cannot use the broker at rediss://{host}:{port}/0: " in proc.stderr
    assert cause in proc.stderr, proc.stderr
    assert db_conn.execute("SELECT count(*) FROM scan_sessions").fetchone() == (0,)


def test_the_broker_refuses_a_plain_client_and_logs_why(tls_broker):
    workdir, port = tls_broker
    with pytest.raises(redis.exceptions.ConnectionError):
        redis.Redis(host="127.0.0.1", port=port, socket_timeout=5).ping()
    deadline = time.monotonic() + 10
    while "wrong version number" not in (workdir / "redis.log").read_text():
        assert time.monotonic() < deadline, (workdir / "redis.log").read_text()[-2000:]
        time.sleep(0.2)
    assert "Error accepting a client connection" in (workdir / "redis.log").read_text()
