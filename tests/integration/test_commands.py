"""The installed commands run as processes, the way the deployment runs them: `soniquebay` and
`celery -A backend_worker worker` with settings they refuse, `soniquebay extract` and `--version`
without Redis or PostgreSQL, the env file read back through sh, the extract code as the workers'
unprivileged user. (The unit tests start no process; these do.)"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import backend_worker
from backend_worker import config
from backend_worker.stages.extract import read_record
from testkit import audio_fixtures as af
from testkit import services
from tests.unit.test_app_config import REFUSED
from tests.unit.test_extract import expect_error

pytestmark = pytest.mark.integration


def closed_port() -> int:
    port = services.free_port()
    with socket.socket() as s, pytest.raises(ConnectionRefusedError):
        s.connect(("127.0.0.1", port))
    return port


def test_extract_json_prints_the_record_with_no_broker_and_no_database(tmp_path):
    """Reading files is for checking a file by hand: it must not need Redis or PostgreSQL."""
    song = af.make_seed("flac", tmp_path)
    af.write_tags(song, {**af.SAMPLE_TAGS, "cover": af.cover_jpeg()}, replace=True)
    garbage = tmp_path / "garbage.mp3"
    garbage.write_bytes(b"this is not audio" * 10)
    env = {
        **os.environ,
        "SONIQUEBAY_BROKER_URL": f"redis://127.0.0.1:{closed_port()}/0",
        "SONIQUEBAY_DATABASE_URL": f"postgresql://nobody@127.0.0.1:{closed_port()}/none",
    }
    proc = subprocess.run(
        [str(services.VENV_BIN / "soniquebay"), "extract", "--json", str(song), str(garbage)],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
    printed = [json.loads(line) for line in proc.stdout.splitlines()]
    assert printed == [
        read_record(str(song)),
        {"path": str(garbage), "error": "not an audio file mutagen can read"},
    ]
    assert printed[0]["title"] == af.SAMPLE_TAGS["title"] and printed[0]["has_cover"] is True


@pytest.mark.parametrize(("env", "message"), REFUSED)
def test_a_worker_and_the_cli_started_with_it_exit_naming_the_values(env, message):
    unreachable = {  # nothing is reached: the settings are refused first
        "SONIQUEBAY_BROKER_URL": f"redis://127.0.0.1:{services.free_port()}/0",
        "SONIQUEBAY_DATABASE_URL": f"postgresql://nobody@127.0.0.1:{services.free_port()}/none",
    }
    env = {**os.environ, **unreachable, **env}
    worker = subprocess.Popen(
        [str(services.VENV_BIN / "celery"), "-A", "backend_worker", "worker", "-Q", "extract", "-c", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd="/", start_new_session=True,
    )  # fmt: skip
    try:
        output, _ = worker.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        services.stop_process_groups([worker])
        pytest.fail("the worker started with these settings and was still running after 60 s")
    assert worker.returncode != 0
    assert message in output, output
    cli = subprocess.run(
        [str(services.VENV_BIN / "soniquebay"), "status"], capture_output=True, text=True, timeout=60, env=env
    )
    assert (cli.returncode, cli.stderr) == (2, f"soniquebay: configuration error: {message}\n")


def test_the_artist_name_settings_ship_the_roles_defaults_through_the_env_file(tmp_path):
    """The defaults of the code are the role's, and the env file's line (JSON in single quotes)
    reads back whole through sh, as the units' EnvironmentFile and the command's wrapper read it."""
    import jinja2
    import yaml

    defaults = yaml.safe_load(services.WORKER_DEFAULTS.read_text())
    assert tuple(defaults["backend_worker_artist_separators"]) == config.DEFAULT_ARTIST_SEPARATORS
    assert tuple(defaults["backend_worker_artist_names_kept"]) == config.DEFAULT_ARTIST_NAMES_KEPT
    template = (services.REPO / "roles/backend_worker/templates/soniquebay.env.j2").read_text()
    lines = [line for line in template.splitlines() if line.startswith("SONIQUEBAY_ARTIST_")]
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined)
    environment.filters["to_json"] = json.dumps
    separators = [*defaults["backend_worker_artist_separators"], " & "]
    rendered = environment.from_string("\n".join(lines)).render(
        backend_worker_artist_separators=separators,
        backend_worker_artist_names_kept=["AC/DC", "Simon & Garfunkel"],
    )
    env_file = tmp_path / "soniquebay.env"
    env_file.write_text(rendered + "\n")
    read = subprocess.run(
        ["sh", "-c", f'set -a; . {env_file}; set +a; exec {sys.executable} -c "{READ_BACK}"'],
        capture_output=True, text=True, check=True, env={"PATH": os.environ["PATH"]},
    ).stdout  # fmt: skip
    assert json.loads(read) == [separators, ["AC/DC", "Simon & Garfunkel"]]


READ_BACK = "import json; from backend_worker.config import artist_name_settings as s; print(json.dumps(s()))"


def test_the_installed_command_prints_it_with_no_settings_and_no_service():
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONIQUEBAY_")}
    env["SONIQUEBAY_DATABASE_URL"] = "not a url"  # --version reads no setting
    proc = subprocess.run(
        [str(services.VENV_BIN / "soniquebay"), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        0,
        f"soniquebay, version {backend_worker.__version__}\n",
        "",
    )


def test_a_file_the_worker_cannot_read_is_permission_denied(tmp_path):
    shared = Path(tempfile.mkdtemp(prefix="soniquebay-perm-", dir="/var/tmp"))
    try:
        shared.chmod(0o755)
        path = af.make_seed("mp3", shared)
        path.chmod(0)
        if os.geteuid() != 0:
            expect_error(path, "permission denied")
            return
        # Root reads anything: ask as `nobody`, the way the workers run.
        code = (
            "import json, sys; from backend_worker.stages.extract import extract_paths; "
            "print(json.dumps(extract_paths(sys.argv[1:])))"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code, str(path)],
            user="nobody",
            group="nogroup",
            capture_output=True,
            text=True,
            cwd="/",
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        records, errors = json.loads(proc.stdout)
        assert records == [] and errors[0]["error"] == "permission denied"
        assert errors[0]["size"] == path.stat().st_size
    finally:
        shutil.rmtree(shared, ignore_errors=True)
