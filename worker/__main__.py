"""`python -m worker`: one Celery worker on TASK_QUEUE, one job at a time."""

from __future__ import annotations

import os
import socket
import sys


def main(argv: list[str] | None = None) -> None:
    # Before torch is imported (lazily, by the first job).
    if threads := os.environ.get("TORCH_NUM_THREADS"):
        os.environ.setdefault("OMP_NUM_THREADS", threads)
    from gan_platform.settings import get_settings
    from worker.tasks import app  # the app, with its tasks registered

    settings = get_settings()
    args = [
        "worker",
        "--queues", settings.TASK_QUEUE,
        "--pool", "solo",
        "--concurrency", "1",
        "--prefetch-multiplier", "1",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
        "--hostname", f"gan-worker-{os.getpid()}@{socket.gethostname()}",
        "--loglevel", settings.LOG_LEVEL,
    ]
    extra = list(sys.argv[1:] if argv is None else argv)
    # --quiet (no banner) is an option of the `celery` command, before the sub-command.
    quiet = [flag for flag in ("--quiet", "-q") if flag in extra]
    extra = [a for a in extra if a not in quiet]
    app.worker_main([*quiet[:1], *args, *extra])


if __name__ == "__main__":
    main()
