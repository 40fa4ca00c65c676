"""Flower's front door on the deployed test host: HTTPS only (HTTP redirects), TLS 1.2 and 1.3, HSTS,
a brake on password guessing, the read-only viewer account, and the certificate (self-signed and
kept, or the operator's, and back)."""

from __future__ import annotations

import hashlib
import json
import shlex
import ssl
import subprocess
from http.client import HTTPSConnection

import pytest

from testkit.deploy.checks import FLOWER, flower_auth, viewer_auth
from testkit.stack import http
from testkit.testhost import TestHost

pytestmark = pytest.mark.deploy

HSTS = "max-age=31536000"
OPERATOR_CERTIFICATE = "/etc/ssl/certs/soniquebay-operator-test.crt"
OPERATOR_KEY = "/etc/ssl/private/soniquebay-operator-test.key"
ERROR_LOG = "/var/log/nginx/error.log"
ACCESS_LOG = "/var/log/nginx/access.log"


def served_certificate() -> str:
    """The certificate nginx presents on 127.0.0.1:443, PEM."""
    return ssl.get_server_certificate(("127.0.0.1", 443))


def fingerprint(pem: str) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


def s_client(host: TestHost, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["openssl", "s_client", "-connect", "127.0.0.1:443", "-CAfile", str(host.flower_certificate()),
         "-verify_return_error", *options],
        input="", capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_http_redirects_to_https_where_flower_asks_for_the_login(deployed):
    status, headers, _ = http("http://127.0.0.1/flower/")
    assert status == 301 and headers["Location"] == "https://127.0.0.1/flower/", headers
    status, headers, _ = http("http://127.0.0.1/flower/api/workers?refresh=1")
    assert status == 301 and headers["Location"] == "https://127.0.0.1/flower/api/workers?refresh=1"
    status, headers, _ = http(FLOWER)
    assert status == 401 and headers.get("Strict-Transport-Security") == HSTS, headers
    assert 'Basic realm="SoniqueBay Flower"' in headers.get("WWW-Authenticate", ""), headers
    for auth in (flower_auth(deployed), viewer_auth(deployed)):
        status, headers, body = http(FLOWER, auth=auth)
        assert status == 200 and b"Flower" in body, auth[0]
        assert headers.get("Strict-Transport-Security") == HSTS, headers


def test_tls_1_2_and_1_3_only(deployed):
    # The client allows TLS 1.1 (security level 0), so a failure is the server refusing it.
    old = s_client(deployed, "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0")
    assert old.returncode != 0 and "alert protocol version" in old.stdout + old.stderr, old.stderr
    for option, protocol in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
        proc = s_client(deployed, option)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
        assert f"Protocol  : {protocol}" in proc.stdout or f"New, {protocol}," in proc.stdout, proc.stdout
        assert "Verify return code: 0 (ok)" in proc.stdout


def test_the_viewer_reads_every_page_and_route_but_any_other_method_is_refused(deployed):
    viewer = viewer_auth(deployed)
    for path in ("", "workers", "tasks", "broker", "api/workers", "api/tasks?limit=5", "api/queues/length",
                 "metrics"):  # fmt: skip
        assert http(FLOWER + path, auth=viewer)[0] == 200, path
    # Flower's operator actions are POSTs (the shutdown, pool restart and revoke tests in
    # test_monitoring.py try them as viewer too); every other method is refused as well.
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        status, _, _ = http(FLOWER + "api/worker/shutdown/nobody@nowhere", auth=viewer, method=method)
        assert status == 403, method
    assert (
        http(FLOWER + "api/worker/shutdown/nobody@nowhere", auth=flower_auth(deployed), method="POST")[0]
        != 403
    )


def test_guessing_passwords_is_braked_and_logged_with_the_client_address(deployed):
    """100 wrong passwords at once from one address (127.0.0.2, so the other tests' address keeps
    its allowance): nginx answers 429 beyond the burst, and logs the failures with the address."""
    context = ssl.create_default_context(cafile=deployed.flower_certificate())
    lines = {log: int(deployed.ssh(f"wc -l < {log}").stdout) for log in (ERROR_LOG, ACCESS_LOG)}
    statuses = []
    for _ in range(100):
        connection = HTTPSConnection(
            "127.0.0.1", 443, context=context, source_address=("127.0.0.2", 0), timeout=10
        )
        connection.request("GET", "/flower/", headers={"Authorization": "Basic YWRtaW46d3JvbmctZ3Vlc3M="})
        statuses.append(connection.getresponse().status)
        connection.close()
    assert set(statuses) == {401, 429}, statuses
    assert statuses[:10] == [401] * 10 and statuses.count(429) >= 50, statuses

    def new_lines(log: str, pattern: str) -> int:
        tail = f"tail -n +{lines[log] + 1} {log}"
        return int(deployed.ssh(f"{tail} | grep -c {shlex.quote(pattern)}", check=False).stdout)

    # Every attempt, braked or not, is in the error log with the user and the client's address.
    assert new_lines(ERROR_LOG, 'user "admin": password mismatch, client: 127.0.0.2,') >= len(statuses)
    assert new_lines(ACCESS_LOG, "^127.0.0.2 .* 429 ") == statuses.count(429)


def test_an_operator_certificate_replaces_the_self_signed_one_and_going_back_works(deployed):
    self_signed = served_certificate()
    assert fingerprint(self_signed) == fingerprint(deployed.flower_certificate().read_text())
    # A path that does not exist fails the play before nginx is touched, naming it.
    site = deployed.ssh("sha256sum /etc/nginx/sites-available/soniquebay.conf").stdout
    missing = deployed.converge(
        "playbooks/monitoring.yml", "-e", json.dumps({"nginx_tls_certificate": "/nonexistent/cert.pem",
                                                     "nginx_tls_certificate_key": OPERATOR_KEY})
    )  # fmt: skip
    assert not missing.ok
    assert "/nonexistent/cert.pem does not exist on" in missing.output, missing.tail(40)
    assert "TASK [nginx : Install nginx" not in missing.output
    assert deployed.ssh("sha256sum /etc/nginx/sites-available/soniquebay.conf").stdout == site
    # The operator's certificate (e.g. from an ACME client on the host).
    deployed.ssh(
        f"openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 "
        f"-subj /CN=operator.test -addext subjectAltName=IP:127.0.0.1,DNS:localhost "
        f"-keyout {OPERATOR_KEY} -out {OPERATOR_CERTIFICATE} 2>&1 && chmod 600 {OPERATOR_KEY}"
    )
    operator = deployed.ssh(f"cat {OPERATOR_CERTIFICATE}").stdout
    given = {"nginx_tls_certificate": OPERATOR_CERTIFICATE, "nginx_tls_certificate_key": OPERATOR_KEY}
    try:
        result = deployed.converge("playbooks/monitoring.yml", "-e", json.dumps(given))
        assert result.ok, result.tail(80)
        assert fingerprint(served_certificate()) == fingerprint(operator)
    finally:
        back = deployed.converge("playbooks/monitoring.yml")
    assert back.ok, back.tail(80)
    # The self-signed certificate was kept: the same one is served again, not a new one.
    assert fingerprint(served_certificate()) == fingerprint(self_signed)
    assert http(FLOWER, auth=flower_auth(deployed))[0] == 200
