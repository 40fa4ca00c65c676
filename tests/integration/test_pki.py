"""The pki role for real (ansible-playbook on this machine, connection local): the private CA and a
host's certificate generated once, renewed by a run within pki_renew_before of its end, and the
operator's own certificates checked, each refusal naming its cause."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
ADDRESS = "10.9.8.7"

PLAYBOOK = """\
- name: The pki role on this machine
  hosts: localhost
  connection: local
  gather_facts: false
  roles:
    - role: pki
  handlers:
    - name: Note the new certificate
      ansible.builtin.debug:
        msg: certificate installed
      listen: soniquebay certificate installed
"""


def run(workdir: Path) -> subprocess.CompletedProcess:
    (workdir / "site.yml").write_text(PLAYBOOK)
    settings = {
        "pki_dir": str(workdir / "tls"),
        "pki_install_dir": str(workdir / "installed"),
        "pki_certificate_names": ["db1", "localhost"],
        "pki_certificate_addresses": [ADDRESS, "127.0.0.1"],
        "ansible_python_interpreter": sys.executable,
    }
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCAL_TEMP": str(workdir / "tmp"),
        "ANSIBLE_HOME": str(workdir / "home"),
    }
    return subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", str(workdir / "site.yml"),
         "-e", json.dumps(settings)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def changed(proc: subprocess.CompletedProcess) -> int:
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return int(proc.stdout.rsplit("changed=", 1)[1].split()[0])


def openssl(*args: str, cwd: Path) -> str:
    return subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def days_left(certificate: Path) -> int:
    end = openssl("x509", "-in", str(certificate), "-noout", "-enddate", cwd=certificate.parent)
    ends = datetime.datetime.strptime(end.split("=", 1)[1].strip(), "%b %d %H:%M:%S %Y %Z")
    return (ends - datetime.datetime.now()).days


def sign(tls: Path, ca: str, days: int, san: str = f"IP:{ADDRESS},IP:127.0.0.1") -> None:
    """localhost.crt for localhost.key, signed by `ca`, valid `days`, naming `san`."""
    (tls / "san.ext").write_text(f"subjectAltName={san}\nextendedKeyUsage=serverAuth\n")
    openssl("req", "-new", "-key", "localhost.key", "-subj", "/CN=db1", "-out", "operator.csr", cwd=tls)
    openssl("x509", "-req", "-in", "operator.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-days", str(days), "-extfile", "san.ext", "-out", "localhost.crt",
            cwd=tls)  # fmt: skip


def test_the_ca_and_a_certificate_are_made_once_and_renewed_near_their_end(tmp_path):
    assert changed(run(tmp_path)) > 0
    tls, installed = tmp_path / "tls", tmp_path / "installed"
    text = openssl("x509", "-in", "localhost.crt", "-noout", "-text", cwd=tls)
    assert f"IP Address:{ADDRESS}" in text and "DNS:db1" in text and "TLS Web Server Authentication" in text
    openssl("verify", "-CAfile", "ca.crt", "localhost.crt", cwd=tls)
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in installed.iterdir()} == {
        "ca.crt": "0o644", "server.crt": "0o644", "server.key": "0o600"
    }  # fmt: skip
    assert (tls / "ca.key").stat().st_mode & 0o777 == 0o600
    assert 363 <= days_left(tls / "localhost.crt") <= 365 and days_left(tls / "ca.crt") >= 3600
    assert changed(run(tmp_path)) == 0
    # 20 days left, within the 30 of pki_renew_before: the next run renews it, and installs it.
    sign(tls, "ca", days=20)
    short = (tls / "localhost.crt").read_text()
    proc = run(tmp_path)
    assert changed(proc) > 0 and "certificate installed" in proc.stdout
    assert (tls / "localhost.crt").read_text() != short and 363 <= days_left(tls / "localhost.crt") <= 365
    assert (installed / "server.crt").read_text() == (tls / "localhost.crt").read_text()


@pytest.mark.parametrize(
    ("case", "cause"),
    [
        ("another-ca", "it does not chain to ca.crt"),
        ("without-the-address", f"its subjectAltName lacks IP:{ADDRESS}"),
        ("ending-soon", "within pki_renew_before: renew it"),
    ],
)
def test_the_operator_s_certificate_is_checked_never_replaced(tmp_path, case, cause):
    assert changed(run(tmp_path)) > 0  # a CA and a key to start from
    tls = tmp_path / "tls"
    if case == "another-ca":
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-days", "30", "-keyout", "other.key", "-out", "other.crt", "-subj", "/CN=Other",
                cwd=tls)  # fmt: skip
        sign(tls, "other", days=365)
    else:
        sign(
            tls,
            "ca",
            days=20 if case == "ending-soon" else 365,
            san="IP:127.0.0.1" if case != "ending-soon" else f"IP:{ADDRESS},IP:127.0.0.1",
        )
    (tls / "ca.key").unlink()  # the operator's CA: nothing is generated
    given = (tls / "localhost.crt").read_text()
    proc = run(tmp_path)
    assert proc.returncode != 0
    assert "localhost.crt cannot serve this host: " in proc.stdout and cause in proc.stdout, proc.stdout[
        -3000:
    ]
    assert (tls / "localhost.crt").read_text() == given and not (tls / "ca.key").exists()


def test_deleting_a_key_or_the_ca_rotates_them_as_the_docs_say(tmp_path):
    """docs/deployment.md, "Rotating the certificates now": a host's key and certificate deleted
    on the controller are made again (a new key); all of credentials/tls/ deleted, a new CA too."""
    assert changed(run(tmp_path)) > 0
    tls, installed = tmp_path / "tls", tmp_path / "installed"
    first = {name: (tls / name).read_text() for name in ("ca.crt", "localhost.key", "localhost.crt")}
    for name in ("localhost.key", "localhost.crt"):
        (tls / name).unlink()
    proc = run(tmp_path)
    assert changed(proc) > 0 and "certificate installed" in proc.stdout
    assert (tls / "localhost.key").read_text() != first["localhost.key"]
    assert (tls / "ca.crt").read_text() == first["ca.crt"]
    assert (installed / "server.key").read_text() == (tls / "localhost.key").read_text()
    for path in tls.iterdir():
        path.unlink()
    assert changed(run(tmp_path)) > 0
    assert (tls / "ca.crt").read_text() != first["ca.crt"]
    assert (installed / "ca.crt").read_text() == (tls / "ca.crt").read_text()
    openssl("verify", "-CAfile", str(installed / "ca.crt"), str(installed / "server.crt"), cwd=tls)
