"""The default worker layout the deploy tests expect (inventory/local/group_vars/workers.yml)."""

# Every worker unit of the default layout (inventory/local/group_vars/workers.yml):
# queue -> (units, concurrency, prefetch multiplier).
LAYOUT = {
    "scan": (2, 16, 16),
    "extract": (2, 8, 4),
    "batch": (1, 4, 2),
    "insert": (2, 16, 8),
    "deferred": (1, 6, 6),
}
# queue -> the Celery pool of its units: threads where the tasks wait on PostgreSQL or the disk.
POOLS = {
    "scan": "threads",
    "extract": "threads",
    "batch": "prefork",
    "insert": "threads",
    "deferred": "threads",
}
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
