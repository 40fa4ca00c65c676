"""Static checks of the Ansible deployment: linters, syntax, the rendered systemd units.

No test host needed: these run on the controller in well under a minute each. Bad inventory values
are tested in tests/deploy/test_playbook_validation.py, where no task can reach this machine.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from testkit import role_filters

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
ROLES = sorted(p for p in (REPO / "roles").iterdir() if p.is_dir())
# What the other roles share: the filters, the credential lookup, the settings they must agree on.
SHARED_ROLE = REPO / "roles/soniquebay"
EXPOSURE_LIMIT = 2.0


def tool(name: str) -> str:
    path = VENV_BIN / name
    return str(path) if path.exists() else name


def run(argv: list[str], *, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1", NO_COLOR="1")
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}"
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, **kwargs)


def test_ansible_lint_production_profile_passes():
    proc = run([tool("ansible-lint"), "--offline", "--profile", "production", "--nocolor"])
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert re.search(r"Passed: 0 failure\(s\), 0 warning\(s\)", output), output[-3000:]


def test_yamllint_is_clean():
    paths = ["playbooks", "roles", "inventory", "tests/deploy", ".yamllint", ".ansible-lint"]
    proc = run([tool("yamllint"), "--strict", *paths])
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("inventory", ["inventory/local/hosts.yml", "inventory/example"])
def test_site_playbook_syntax(inventory):
    proc = run([tool("ansible-playbook"), "--syntax-check", "-i", inventory, "playbooks/site.yml"])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_example_inventory_is_a_broker_database_host_and_worker_hosts():
    proc = run([tool("ansible-inventory"), "-i", "inventory/example", "--list"])
    assert proc.returncode == 0, proc.stderr
    groups = json.loads(proc.stdout)
    assert groups["broker"]["hosts"] == groups["database"]["hosts"] == ["db1"]
    assert sorted(groups["workers"]["hosts"]) == ["worker1", "worker2"]
    hostvars = groups["_meta"]["hostvars"]
    # All worker hosts mount the library at the same path.
    assert {tuple(hostvars[h]["backend_worker_library_roots"]) for h in groups["workers"]["hosts"]} == {
        ("/srv/music",)
    }


def test_deployable_files_start_with_ansible_managed_and_each_role_renders_its_own():
    # *.inc.j2: a part of several deployable files (the units' sandbox), included by them.
    templates = sorted(t for t in (REPO / "roles").glob("*/templates/*.j2") if not t.name.endswith(".inc.j2"))
    parts = sorted((REPO / "roles").glob("*/templates/*.inc.j2"))
    assert templates
    # Formats without comments cannot carry the header; each says why in its first Jinja comment.
    without_comments = {"redis-users.acl.j2"}
    for template in templates:
        text = template.read_text()
        if template.name in without_comments:
            assert text.startswith("{#") and "no comments" in text.split("#}")[0], template
        else:
            assert text.startswith("{{ ansible_managed | comment"), template
    assert not (REPO / "templates").exists(), "deployable files live in their role's templates/"
    names = [t.name for t in templates + parts]
    assert len(names) == len(set(names)), "a template is copied into two roles"
    for role in ROLES:
        tasks = "\n".join(p.read_text() for p in role.glob("tasks/*.yml"))
        # A looped template (src: "{{ item }}.j2") is named by its file in the loop, in tasks or vars.
        named = tasks + "\n".join(p.read_text() for p in role.glob("vars/*.yml"))
        # A role reaches nothing outside its own folder (it works copied alone into roles/).
        assert "role_path | dirname" not in tasks, role.name
        for template in role.glob("templates/*.j2"):
            if template.name.endswith(".inc.j2"):
                included = "\n".join(t.read_text() for t in role.glob("templates/*.j2"))
                assert f"{{% include '{template.name}' %}}" in included, f"{template} is not included"
            else:
                assert template.stem in named, f"{template} is not used"


@pytest.fixture(scope="module")
def rendered_units(tmp_path_factory) -> Path:
    """The units as the roles render them (default layout), ExecStart pointing at this venv's Celery."""
    out = tmp_path_factory.mktemp("units")
    venv = VENV_BIN.parent
    assert (venv / "bin" / "celery").exists(), "the test venv needs the app's dependencies (celery)"
    proc = run(
        [tool("ansible-playbook"), "tests/deploy/render_units.yml", "-e", f"out_dir={out}",
         "-e", f"backend_worker_venv={venv}", "-e", f"flower_venv={venv}"]
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr
    return out


def test_one_template_renders_every_worker_unit(rendered_units):
    names = sorted(p.name for p in rendered_units.glob("soniquebay-worker-*.service"))
    assert names == sorted(
        f"soniquebay-worker-{q}-{n}.service"
        for q, units in {"scan": 2, "extract": 2, "batch": 1, "insert": 2, "deferred": 1}.items()
        for n in range(1, units + 1)
    )
    scan = (rendered_units / "soniquebay-worker-scan-1.service").read_text()
    assert (
        " worker " in scan and "-Q scan -c 16 --prefetch-multiplier 16 --pool threads -n scan-1@%%h" in scan
    )
    assert "KillMode=mixed" in scan and "Type=exec" in scan and "Restart=always" in scan
    assert "TimeoutStopSec=660" in scan  # scan's 600 s time limit + 60
    assert "CPUSchedulingPolicy=batch" in scan
    extract = (rendered_units / "soniquebay-worker-extract-1.service").read_text()
    assert "-Q extract -c 8 --prefetch-multiplier 4 --pool threads -n extract-1@%%h" in extract
    deferred = (rendered_units / "soniquebay-worker-deferred-1.service").read_text()
    assert "-Q deferred -c 6 --prefetch-multiplier 6" in deferred and "TimeoutStopSec=960" in deferred
    flower = (rendered_units / "soniquebay-flower.service").read_text()
    assert "--address=127.0.0.1 --port=5555 --url_prefix=flower --persistent=True" in flower
    assert "FLOWER_BASIC_AUTH" not in flower and "--basic_auth" not in flower


def test_rendered_units_pass_systemd_analyze_verify(rendered_units):
    units = sorted(p.name for p in rendered_units.iterdir())
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *units], cwd=rendered_units, capture_output=True, text=True
    )
    # verify exits 0 on unknown or unparsable directives: its stderr is the verdict.
    assert proc.stderr == "", proc.stderr
    assert proc.returncode == 0


@pytest.mark.parametrize(
    "unit", ["soniquebay-flower.service", "soniquebay-firewall@redis.service", "soniquebay-scan.timer"]
)
def test_the_roles_unit_check_passes_a_good_file_and_refuses_a_bad_one(rendered_units, tmp_path, unit):
    """The `validate:` the roles give each unit file, run as Ansible runs it (%s: a temporary file
    with no unit name): the rendered unit passes; with an unknown directive, or a command that does
    not exist, it is refused, naming the fault."""
    import shlex

    name = unit.replace("@redis.", "@.")  # the roles write the template unit
    command = role_filters.load().systemd_verify_command(name)
    good = tmp_path / "source"
    good.write_text((rendered_units / unit).read_text())
    proc = subprocess.run(shlex.split(command % good), capture_output=True, text=True)
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
    section = "[Timer]" if unit.endswith(".timer") else "[Service]"
    bad = tmp_path / "bad"
    bad.write_text(good.read_text().replace(section, f"{section}\nRestartEverything=yes", 1))
    proc = subprocess.run(shlex.split(command % bad), capture_output=True, text=True)
    assert proc.returncode != 0 and "RestartEverything" in proc.stderr, proc.stderr
    if unit.endswith(".service"):
        missing = tmp_path / "missing"
        text = re.sub(r"(?m)^ExecStart=\S+", "ExecStart=/nonexistent/soniquebay", good.read_text())
        missing.write_text(text)
        proc = subprocess.run(shlex.split(command % missing), capture_output=True, text=True)
        assert proc.returncode != 0 and "/nonexistent/soniquebay" in proc.stderr, proc.stderr


def test_rendered_services_expose_at_most_2_0(rendered_units):
    # Not the firewall: a root oneshot that loads nftables rules (CAP_NET_ADMIN) and exits, before
    # the network is up; nothing of it keeps running or listens.
    services = sorted(rendered_units.glob("*.service"))
    assert {p.name for p in services} >= {"soniquebay-flower.service", "soniquebay-exporter.service"}
    for unit in [p for p in services if not p.name.startswith("soniquebay-firewall@")]:
        proc = subprocess.run(
            ["systemd-analyze", "security", "--offline=true", "--no-pager", unit.name],
            cwd=rendered_units,
            capture_output=True,
            text=True,
        )
        match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
        assert match, proc.stdout + proc.stderr
        assert float(match.group(1)) <= EXPOSURE_LIMIT, f"{unit.name}: {match.group(1)}\n{proc.stdout}"


def role_yaml(role: Path, folder: str) -> str:
    return "\n".join(p.read_text() for p in sorted((role / folder).glob("*.yml")))


def test_every_role_input_is_in_its_defaults_and_its_argument_specs():
    import yaml

    for role in ROLES:
        defaults = yaml.safe_load((role / "defaults/main.yml").read_text()) or {}
        specs = yaml.safe_load((role / "meta/argument_specs.yml").read_text())["argument_specs"]["main"]
        assert set(defaults) == set(specs["options"]), role.name
        assert all(name.startswith(role.name + "_") for name in defaults), role.name


def test_defaults_and_vars_hold_no_jinja_loops():
    # Loops belong in the filters (roles/soniquebay, plain Python, tests/unit/test_filter_plugins.py).
    for role in ROLES:
        for folder in ("defaults", "vars"):
            assert "{%" not in role_yaml(role, folder), f"{role.name}/{folder}"


def test_services_restart_in_handlers_only_and_no_role_reads_what_another_registers():
    registered: dict[str, set[str]] = {}
    for role in ROLES:
        tasks = role_yaml(role, "tasks")
        assert "state: restarted" not in tasks, f"{role.name}: restart from a handler"
        names = set(re.findall(r"^\s*register: (\w+)", tasks + role_yaml(role, "handlers"), re.MULTILINE))
        facts = re.findall(r"set_fact:\n((?:\s{4,}\w+:.*\n)+)", tasks)
        names |= {line.split(":")[0].strip() for block in facts for line in block.splitlines()}
        registered[role.name] = names
    for role in ROLES:
        text = "\n".join(role_yaml(role, folder) for folder in ("defaults", "vars", "tasks", "handlers"))
        for other, names in registered.items():
            if other != role.name:
                read = sorted(name for name in names if re.search(rf"\b{name}\b", text))
                assert read == [], f"{role.name} reads {read}, set by the {other} role"


def test_passwords_come_from_the_one_credential_lookup():
    lookups = "\n".join(role_yaml(role, "defaults") for role in ROLES)
    assert "ansible.builtin.password" not in lookups
    names = re.findall(r"lookup\('soniquebay_credential', '([a-z-]+)'", lookups)
    assert len(names) == lookups.count("lookup('soniquebay_credential'")
    # Each role that uses a password looks it up itself (a role stands alone), by the same name.
    assert sorted(set(names)) == [
        *("flower-admin", "flower-viewer", "postgresql", "postgresql-owner"),
        *("redis", "redis-admin", "redis-exporter", "redis-flower"),
    ]


# Settings that must agree, each derived from one variable of the shared role.
DERIVED = {
    "flower": ("flower_port", "flower_url_prefix"),
    "nginx": ("nginx_flower_location", "nginx_flower_upstream"),
    "prometheus": ("prometheus_flower_target", "prometheus_flower_metrics_path"),
}


def test_settings_that_must_agree_derive_from_the_one_shared_setting():
    import yaml

    shared = yaml.safe_load((SHARED_ROLE / "defaults/main.yml").read_text())
    assert set(shared) >= {"soniquebay_flower_prefix", "soniquebay_flower_port"}
    for role, names in DERIVED.items():
        defaults = yaml.safe_load((REPO / "roles" / role / "defaults/main.yml").read_text())
        for name in names:
            assert "{{ soniquebay_flower_" in str(defaults[name]), f"{role}: {name} = {defaults[name]}"
    # Nowhere else written out (comments and the roles' descriptions aside): the port and the path
    # live in the shared role's defaults only.
    files = [
        *(REPO / "roles").rglob("*.yml"),
        *(REPO / "roles").rglob("*.j2"),
        *(REPO / "playbooks").glob("*.yml"),
    ]
    for path in files:
        if SHARED_ROLE in path.parents or path.parent.name == "meta":
            continue
        code = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
        assert not [line for line in code if "5555" in line or "/flower/" in line], path
