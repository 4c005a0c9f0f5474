"""The launcher (`make run`) supervises: children killed under it come back, with backoff.

The first tests drive `service.launch.Child` with small shell processes; the others run
`python -m service.launch` for real (tests/conftest.py's `Launcher`) and SIGKILL its
worker, its Redis and its API."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service import launch
from tests.conftest import Launcher, alive, fast_spec, progress_by_attempt, wait_for

pytestmark = pytest.mark.integration

CHECKPOINT_EVERY = 20
# Short leases: a killed worker's job is re-queued seconds after its replacement starts.
FAST_RECOVERY = {"LEASE_SECONDS": "4", "REQUEUE_AFTER_SECONDS": "4", "MAX_ATTEMPTS": "5"}


def test_backoff_doubles_up_to_its_cap_and_starts_over_after_a_healthy_run() -> None:
    backoff = launch.Backoff(initial=1, maximum=30, healthy_after=60)
    delays = [backoff.next_delay(ran_for=2) for _ in range(7)]
    assert delays == [1, 2, 4, 8, 16, 30, 30]
    assert backoff.next_delay(ran_for=61) == 1
    assert backoff.next_delay(ran_for=0) == 2


@pytest.fixture
def group_child(tmp_path: Path) -> Iterator[tuple[launch.Child, Path]]:
    """A child that starts a grandchild in its own process group, as a worker's job
    process would; the grandchild's pid is written to a file."""
    pid_file = tmp_path / "grandchild.pid"
    script = f"sleep 300 & echo $! > {pid_file}; wait"
    env = {"PATH": "/usr/bin:/bin"}
    child = launch.Child("worker", lambda: launch._spawn(["sh", "-c", script], env),
                         launch.Backoff(initial=1, maximum=30, healthy_after=60))
    yield child, pid_file
    child.stop()


def _grandchild(pid_file: Path) -> int:
    def read() -> int:
        text = pid_file.read_text().strip() if pid_file.exists() else ""
        return int(text) if text else 0

    return wait_for("the grandchild's pid", read, 10, lambda: "")


def test_a_dead_child_is_restarted_after_its_delay_and_its_group_killed(
        group_child: tuple[launch.Child, Path]) -> None:
    child, pid_file = group_child
    first = child.start()
    grandchild = _grandchild(pid_file)
    pid_file.unlink()
    first.send_signal(signal.SIGKILL)  # the leader only, as the OOM killer does
    first.wait(5)
    killed_at = time.monotonic()
    assert alive(grandchild)
    while not child.check(time.monotonic()):
        assert time.monotonic() - killed_at < 10, "never restarted"
        time.sleep(0.05)
    assert time.monotonic() - killed_at >= 0.9  # after the first backoff delay, not at once
    assert child.pid is not None and child.pid != first.pid and child.restarts == 1
    # SIGKILL is delivered asynchronously: give the kernel a moment
    wait_for("the dead child's group to die", lambda: not alive(grandchild), 5, lambda: "")
    second_grandchild = _grandchild(pid_file)
    child.stop()
    assert child.pid is None
    wait_for("the stopped child's group to die", lambda: not alive(second_grandchild), 5,
             lambda: "")


def _watch_api(url: str, stop: threading.Event, failures: list[str]) -> None:
    """Polls /healthz every 0.25 s until `stop`; every non-200 or error goes to `failures`."""
    with httpx.Client(base_url=url, timeout=10) as client:
        while not stop.is_set():
            try:
                r = client.get("/healthz")
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text[:200]}")
            except httpx.HTTPError as exc:
                failures.append(repr(exc))
            stop.wait(0.25)


def test_worker_sigkilled_twice_under_the_launcher_resumes_and_succeeds(
        launcher: type[Launcher], tmp_path: Path) -> None:
    run = launcher(tmp_path, **FAST_RECOVERY)
    run.start()
    api_pid = run.pid("API")
    stop, failures = threading.Event(), []
    watcher = threading.Thread(target=_watch_api, args=(run.client.base_url, stop, failures))
    watcher.start()
    try:
        spec = fast_spec(steps=400, checkpoint_every=CHECKPOINT_EVERY)
        job = run.client.post("/v1/jobs", json=spec).json()
        killed_at_step = 0
        for attempt in (1, 2):
            # well past a checkpoint of this attempt, so that there is something to resume
            seen = run.wait_job(job["id"], lambda j, a=attempt, s=killed_at_step: (
                j["attempts"] == a and j["status"] == "running"
                and j["progress"]["step"] >= s + 2 * CHECKPOINT_EVERY))
            worker = run.pid("worker")
            run.environ(worker)  # it is our worker (raises if the pid is gone)
            os.kill(worker, signal.SIGKILL)
            killed_at_step = run.client.get(f"/v1/jobs/{job['id']}").json()["progress"]["step"]
            assert killed_at_step < 400, f"finished before kill {attempt}: make the job longer"
            assert seen["status"] == "running"
            run.wait_restart("worker", worker)
        done = run.finish(job["id"])
    finally:
        stop.set()
        watcher.join(10)
    assert done["status"] == "succeeded", (done, run.log()[-6000:])
    assert done["attempts"] == 3 and done["progress"]["step"] == 400, done
    assert failures == [], failures[:5]
    assert run.pid("API") == api_pid  # the API was not restarted: it never went down
    assert run.state()["children"]["worker"]["restarts"] == 2
    assert run.log().count("launcher: the worker (pid") == 2
    steps = progress_by_attempt(run.client, job["id"])
    assert sorted(steps) == [1, 2, 3], steps
    for attempt in (2, 3):
        # resumed from a checkpoint: at most the steps since the last one are redone
        first, previous_last = min(steps[attempt]), max(steps[attempt - 1])
        assert first > CHECKPOINT_EVERY, (attempt, steps)
        assert first >= previous_last - 2 * CHECKPOINT_EVERY, (attempt, steps)
    assert run.stop() == 0


def test_killed_embedded_redis_comes_back_with_its_port_and_password(
        launcher: type[Launcher], tmp_path: Path) -> None:
    import redis

    run = launcher(tmp_path, **FAST_RECOVERY)
    run.start()
    url = run.environ(run.pid("API"))["REDIS_URL"]
    worker, broker = run.pid("worker"), run.pid("broker")
    os.kill(broker, signal.SIGKILL)
    run.wait_restart("broker", broker)
    client = redis.Redis.from_url(url, socket_timeout=5)
    wait_for("Redis on the same port and password", client.ping, 20, run.log)
    client.close()
    port = int(redis.connection.parse_url(url)["port"])
    with pytest.raises(redis.exceptions.AuthenticationError):  # still locked
        redis.Redis(host="127.0.0.1", port=port, socket_timeout=5).ping()
    assert "launcher: the broker (pid" in run.log()
    done = run.finish(run.client.post("/v1/jobs", json=fast_spec(steps=20)).json()["id"])
    assert done["status"] == "succeeded", (done, run.log()[-6000:])
    assert run.pid("worker") == worker  # only Redis was restarted
    assert run.stop() == 0
    # the worker's and the API's reconnection errors name the broker without its password
    assert redis.connection.parse_url(url)["password"] not in run.log()


def test_killed_api_is_restarted_on_its_port(launcher: type[Launcher], tmp_path: Path) -> None:
    run = launcher(tmp_path)
    run.start()
    api, worker = run.pid("API"), run.pid("worker")
    os.kill(api, signal.SIGKILL)
    run.wait_restart("API", api)

    def healthy() -> bool:
        try:
            return run.client.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    wait_for("the restarted API to answer", healthy, 60, run.log)
    assert run.pid("worker") == worker
    assert "launcher: the API (pid" in run.log() and "was killed by SIGKILL" in run.log()
    assert run.stop() == 0
