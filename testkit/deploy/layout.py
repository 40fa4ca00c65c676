"""The default worker layout the deploy tests expect: the role's (roles/backend_worker/defaults/main.yml),
read, not written again here (tests/deploy/test_lint.py checks it against the product's layout)."""

from testkit.services import deployment_layout

# Every worker unit of the default layout: queue -> (units, concurrency, prefetch multiplier).
LAYOUT = {
    queue: (units, concurrency, multiplier)
    for queue, units, concurrency, multiplier, _, _ in deployment_layout()
}
# queue -> the Celery pool of its units: threads where the tasks wait on PostgreSQL or the disk.
POOLS = {queue: pool for queue, _, _, _, pool, _ in deployment_layout()}
WORKER_UNITS = [f"soniquebay-worker-{queue}-{n}.service" for queue, (units, _, _) in LAYOUT.items()
                for n in range(1, units + 1)]  # fmt: skip
SONIQUEBAY_UNITS = [
    *WORKER_UNITS,
    "soniquebay-flower.service",
    "soniquebay-exporter.service",
    "soniquebay-workers.target",
    "soniquebay.target",
]
SYSTEM_UNITS = ["redis-server.service", "postgresql.service", "nginx.service", "prometheus.service"]
ALL_UNITS = [*SONIQUEBAY_UNITS, *SYSTEM_UNITS]


def expected_layout() -> dict[str, tuple[str, int, int]]:
    """worker name (without @host) -> (queue, concurrency, prefetch count = concurrency * multiplier)."""
    layout = {}
    for queue, (units, concurrency, multiplier) in LAYOUT.items():
        for n in range(1, units + 1):
            layout[f"{queue}-{n}"] = (queue, concurrency, concurrency * multiplier)
    return layout
