#!/usr/bin/env bash
# Installs what `make test` needs on a fresh Debian 12: Debian packages, then the project venv.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=$(cat scripts/apt-packages*.txt | sed 's/#.*//' | xargs)
missing=$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' $packages 2>/dev/null | awk '$2 != "installed" {print $1}' || true)
# dpkg-query prints nothing for packages it never heard of: count those as missing too.
for p in $packages; do dpkg-query -W "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$(echo $missing | xargs)" ]; then
    echo "install-deps: apt-get install $missing"
    apt-get update -qq
    # Tests run their own redis-server and PostgreSQL on free ports: don't let the packages
    # start system instances (they would hold the ports the test host needs).
    policy=/usr/sbin/policy-rc.d
    [ -e $policy ] || { printf '#!/bin/sh\nexit 101\n' > $policy; chmod +x $policy; trap 'rm -f $policy' EXIT; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
# Debian's python3 (not a per-user Python under /root): the unprivileged test workers run it too.
stamp=.venv/.installed-$(cat pyproject.toml backend_worker/__init__.py | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
    rm -rf .venv
    /usr/bin/python3 -m venv .venv
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e '.[test,deploy]'
    touch "$stamp"
fi
