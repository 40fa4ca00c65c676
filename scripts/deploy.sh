#!/usr/bin/env bash
# `make deploy`: provision this machine with playbooks/site.yml (Redis, PostgreSQL, the app and its
# Celery worker units, Flower behind nginx). Run as root on Debian 12 or 13 with systemd (the releases the tests boot).
#
#   make deploy                                        this machine (inventory/local)
#   INVENTORY=inventory/example make deploy            other hosts, over SSH
#   make deploy ARGS='--check --diff'                  extra ansible-playbook arguments (or pass them to this script)
#
# Creates (or reuses) the project venv .venv with Ansible from pyproject's `deploy` extra.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

die() { echo "deploy: $*" >&2; exit 1; }

inventory=${INVENTORY:-inventory/local/hosts.yml}
venv=${DEPLOY_VENV:-.venv}
python=${DEPLOY_PYTHON:-/usr/bin/python3}

if [ "$inventory" = inventory/local/hosts.yml ]; then
    [ "$(id -u)" -eq 0 ] || die "run as root: make deploy provisions this machine"
    [ -d /run/systemd/system ] || die "this machine does not run systemd (PID 1 is $(cat /proc/1/comm)); the deployment manages systemd units"
fi
[ -x "$python" ] || die "$python not found: install python3"

if ! "$venv/bin/ansible-playbook" --version >/dev/null 2>&1; then
    if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
        [ "$(id -u)" -eq 0 ] || die "python3-venv is missing: apt-get install python3-venv"
        echo "deploy: apt-get install python3-venv"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    fi
    echo "deploy: creating $venv with Ansible"
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip
    "$venv/bin/pip" install -q -e '.[deploy]'
fi

export ANSIBLE_CONFIG="$repo/ansible.cfg"
# shellcheck disable=SC2086 # ARGS is a list of arguments
"$venv/bin/ansible-playbook" -i "$inventory" playbooks/site.yml ${ARGS:-} "$@"

credentials=${SONIQUEBAY_CREDENTIALS_DIR:-$repo/credentials}
echo
echo "SoniqueBay is deployed. Flower: https://<monitoring host>/flower/ (this machine: https://localhost/flower/)"
if [ -f "$credentials/flower-admin" ]; then
    echo "Log in as admin with the password in $credentials/flower-admin (mode 0600, git-ignored),"
    echo "or read only as viewer with the password in $credentials/flower-viewer."
else
    echo "Log in as admin or viewer with the passwords from Ansible Vault (soniquebay_flower_admin_password, soniquebay_flower_viewer_password)."
fi
for certificate in "$credentials"/flower-certificate-*.pem; do
    [ -f "$certificate" ] || continue
    host=${certificate##*/flower-certificate-}
    echo "Certificate of ${host%.pem}: $(openssl x509 -in "$certificate" -noout -fingerprint -sha256 | cut -d= -f2) (SHA-256; a copy in $certificate)"
done
echo "Manage the services with: systemctl start|stop|restart|status soniquebay.target"
