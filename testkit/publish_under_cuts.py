"""Sends task messages the way the workers' tasks do (backend_worker.tasks.send), from many
threads at once, for a while; prints what became of each send as JSON. Run in a process of its own
(`python -m testkit.publish_under_cuts SECONDS THREADS`) with SONIQUEBAY_BROKER_URL pointing where
the test wants, since the app reads its settings once."""

from __future__ import annotations

import json
import sys
import threading
import time
import traceback
import uuid


def main(seconds: float, threads: int) -> None:
    from backend_worker.failures import TRANSIENT_ERRORS
    from backend_worker.tasks import send

    sent: list[str] = []
    transient: list[str] = []
    other: list[str] = []
    stop = time.monotonic() + seconds

    def publish() -> None:
        while time.monotonic() < stop:
            task_id = str(uuid.uuid4())
            try:
                send("insert.records", {"session_id": "cut-probe", "batch_id": task_id}, task_id)
            except TRANSIENT_ERRORS as exc:
                transient.append(type(exc).__name__)
                time.sleep(0.05)  # what the retry policy's backoff would do, shortened
            except Exception:  # a send that fails otherwise fails its task: the session with it
                other.append(traceback.format_exc())
                time.sleep(0.05)
            else:
                sent.append(task_id)

    workers = [threading.Thread(target=publish) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    json.dump({"sent": sent, "transient": transient, "other": other}, sys.stdout)


if __name__ == "__main__":
    main(float(sys.argv[1]), int(sys.argv[2]))
