"""A queue is declared once: `backend_worker.pipeline.QUEUES`. The app's queues and routes, the
stages and the test kit's layouts are derived from it or from the role's defaults; every other
place that has to name the queues (YAML the roles and inventories read, the app's default time
limits) is checked against it here, so a queue added or renamed in one place only fails this test.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from backend_worker import config, pipeline
from backend_worker import tasks as _registers_the_tasks  # noqa: F401
from backend_worker.app import app
from testkit import multihost
from testkit.deploy import layout

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles/backend_worker"


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def pool_queues(pools: list[dict]) -> list[str]:
    return [pool["queue"] for pool in pools]


def places_naming_the_queues() -> dict[str, list[str]]:
    """Every place outside pipeline.QUEUES that names the queues, as the list it names them in."""
    defaults = load(ROLE / "defaults/main.yml")
    specs = load(ROLE / "meta/argument_specs.yml")["argument_specs"]
    places = {
        "config.DEFAULT_TIME_LIMITS": list(config.DEFAULT_TIME_LIMITS),
        "the pipeline's stages (pipeline.STAGES)": sorted({stage.queue for stage in pipeline.STAGES}),
        "the app's task queues": [queue.name for queue in app.conf.task_queues],
        "the queues of the app's tasks": sorted(
            {pipeline.queue_of(name) for name in app.tasks if not name.startswith("celery.")}
        ),
        "roles/backend_worker/defaults: backend_worker_queue_time_limits": list(
            defaults["backend_worker_queue_time_limits"]
        ),
        "roles/backend_worker/defaults: backend_worker_pools": pool_queues(defaults["backend_worker_pools"]),
        "testkit/deploy/layout.py": list(layout.LAYOUT),
        "testkit/multihost.py": list(multihost.CONCURRENCY),
    }
    for entry, spec in specs.items():
        pools = spec["options"].get("backend_worker_pools")
        if pools:
            places[f"roles/backend_worker/meta/argument_specs.yml ({entry}): pool queue choices"] = pools[
                "options"
            ]["queue"]["choices"]
    for group_vars in sorted(REPO.glob("inventory/*/group_vars/*.yml")):
        pools = load(group_vars).get("backend_worker_pools")
        if pools is not None:
            places[str(group_vars.relative_to(REPO))] = pool_queues(pools)
    return places


def test_every_place_that_names_the_queues_names_those_of_the_pipeline():
    places = places_naming_the_queues()
    # The argument specs of every entry point and the example inventory are among them.
    assert any("argument_specs" in place for place in places)
    assert "inventory/example/group_vars/workers.yml" in places
    wanted = sorted(pipeline.QUEUES)
    wrong = {place: queues for place, queues in places.items() if sorted(queues) != wanted}
    assert wrong == {}, f"the queues are {list(pipeline.QUEUES)} (backend_worker/pipeline.py); these differ"


def test_the_ordered_places_keep_the_pipelines_order():
    # Pools, units and time limits are listed in the order work flows: scan to deferred.
    places = places_naming_the_queues()
    ordered = {
        place: queues for place, queues in places.items() if "stages" not in place and "tasks" not in place
    }
    assert {place: queues for place, queues in ordered.items() if queues != list(pipeline.QUEUES)} == {}
