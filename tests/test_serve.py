"""``cronhub serve`` as a user runs it: the installed executable, a SQLite file, signals."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from cronhub.errors import UsageError
from cronhub.web.serve import check_exposure, is_loopback_host

CRONHUB = str(Path(sys.executable).parent / "cronhub")

TOKEN = "serve-test-token-0123456789abcdef"
JOBS = """
    import time

    import cronhub

    hub = cronhub.Hub()

    @hub.job(every="1h", name="hello")
    def hello(ctx):
        ctx.log.info("hello from serve")

    @hub.job(every="1h", name="slow")
    def slow(ctx):
        time.sleep(2)
        ctx.log.info("slow finished")
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Served:
    """A ``cronhub serve`` process in a temp dir, with its output in files."""

    def __init__(self, tmp_path: Path, *args: str, storage: str | None = None, env=None) -> None:
        (tmp_path / "servejobs.py").write_text(textwrap.dedent(JOBS))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.storage = storage or f"sqlite:///{tmp_path / 'serve.db'}"
        environ = {k: v for k, v in os.environ.items() if not k.startswith("CRONHUB_")}
        # Only this test's jobs: the demo job package installed alongside is left out.
        environ.update({"PYTHONPATH": str(tmp_path), "CRONHUB_DISABLE_PLUGINS": "acme"})
        environ.update(env or {})
        self.stderr_path = tmp_path / f"serve-{self.port}.err"
        self.process = subprocess.Popen(
            [
                CRONHUB,
                "--storage",
                self.storage,
                "--app",
                "servejobs:hub",
                "serve",
                "--port",
                str(self.port),
                *args,
            ],
            cwd=tmp_path,
            env=environ,
            stdout=subprocess.DEVNULL,
            stderr=self.stderr_path.open("w"),
        )
        self.environ = environ
        self.cwd = tmp_path

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def wait_ready(self, timeout: float = 60) -> httpx.Response:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"serve exited with {self.process.returncode}:\n{self.stderr}")
            try:
                response = httpx.get(f"{self.url}/healthz", timeout=5)
            except httpx.TransportError:
                time.sleep(0.1)
                continue
            if response.status_code == 200:
                return response
            time.sleep(0.1)
        pytest.fail(f"serve did not answer /healthz within {timeout} s:\n{self.stderr}")

    def stop(self, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            pytest.fail(f"serve did not stop within {timeout} s after SIGTERM:\n{self.stderr}")


@pytest.fixture
def serve(tmp_path):
    started: list[Served] = []

    def start(*args: str, **options) -> Served:
        server = Served(tmp_path, *args, **options)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(timeout=10)


def wait_run(client: httpx.Client, run_id: int, status: str = "succeeded", timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.get(f"/api/runs/{run_id}").json()
        if run["status"] == status:
            return run
        time.sleep(0.1)
    pytest.fail(f"run {run_id} did not become {status} (last: {run['status']})")


def test_serve_runs_jobs_answers_the_api_and_exits_0_on_sigterm(serve, run_cli):
    server = serve()
    health = server.wait_ready().json()
    assert health == {**health, "status": "ok", "scheduler": "ok", "storage": "ok"}
    assert f"cronhub serve: {server.url}" in server.stderr
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert [j["name"] for j in client.get("/api/jobs").json()["jobs"]] == ["hello", "slow"]
        with client.stream("GET", "/api/events") as stream:
            run_id = client.post("/api/jobs/hello/run").json()["run_id"]
            kinds = []
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    kinds.append(line.removeprefix("event: "))
                if line.startswith("data: ") and kinds[-1] == "run.finished":
                    assert json.loads(line.removeprefix("data: "))["run"]["id"] == run_id
                    break
            assert kinds == ["run.queued", "run.started", "run.finished"]
        run = wait_run(client, run_id)
        assert "hello from serve" in run["log"]
        assert (
            'cronhub_runs_total{job="hello",status="succeeded"} 1.0' in client.get("/metrics").text
        )
    assert server.stop() == 0
    assert "scheduler stopped" in server.stderr
    # The run is in the SQLite file for the next process.
    history = run_cli(
        "--storage",
        server.storage,
        "history",
        "--json",
        cwd=server.cwd,
        env={"CRONHUB_DISABLE_PLUGINS": "acme"},
    )
    assert [r["id"] for r in history.json()] == [run_id]


def test_sigterm_lets_a_running_job_finish(serve):
    server = serve()
    server.wait_ready()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        run_id = client.post("/api/jobs/slow/run").json()["run_id"]
        wait_run(client, run_id, "running")
        assert server.stop() == 0
    server_after = serve()  # same database, a new process
    server_after.wait_ready()
    with httpx.Client(base_url=server_after.url, timeout=30) as client:
        run = client.get(f"/api/runs/{run_id}").json()
        assert run["status"] == "succeeded" and "slow finished" in run["log"]
    assert server_after.stop() == 0


def test_a_token_from_the_environment_guards_the_api(serve):
    server = serve(env={"CRONHUB_TOKEN": TOKEN})
    server.wait_ready()
    assert "token required" in server.stderr
    assert TOKEN not in server.stderr
    assert httpx.get(f"{server.url}/api/jobs", timeout=10).status_code == 401
    headers = {"authorization": f"Bearer {TOKEN}"}
    assert httpx.get(f"{server.url}/api/jobs", headers=headers, timeout=10).status_code == 200
    assert server.stop() == 0


def test_web_only_serve_and_a_worker_share_the_storage(serve, tmp_path):
    server = serve("--no-scheduler")
    assert server.wait_ready().json()["scheduler"] == "disabled"
    worker = subprocess.Popen(
        [CRONHUB, "--storage", server.storage, "--app", "servejobs:hub", "worker"],
        cwd=tmp_path,
        env={**server.environ, "CRONHUB_REAPER_INTERVAL": "0.2"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            run_id = client.post("/api/jobs/hello/run").json()["run_id"]
            run = wait_run(client, run_id)
            assert run["instance"] != client.get("/api/instances").json()["instances"][0]["id"]
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
    assert server.stop() == 0


def test_memory_storage_says_nothing_persists(serve):
    server = serve(storage="memory://")
    server.wait_ready()
    assert "warning: memory:// storage: nothing persists" in server.stderr
    assert server.stop() == 0


def test_refusals_are_one_line_and_exit_2(run_cli, tmp_path):
    exposed = run_cli("serve", "--host", "0.0.0.0", timeout=60)
    assert exposed.code == 2
    assert exposed.stderr.strip().splitlines() == [
        "error: refusing to listen on 0.0.0.0 without a token: anyone who can reach it could "
        "run and cancel jobs; set --token or CRONHUB_TOKEN, or pass --insecure"
    ]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = run_cli("serve", "--port", str(port), timeout=60)
    assert busy.code == 2
    last = busy.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot listen on 127.0.0.1:{port}: "), busy.stderr
    empty = run_cli("serve", "--token", "", timeout=60)
    assert empty.code == 2 and "--token must not be empty" in empty.stderr


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.4.5", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.0.2.10", False),
    ],
)
def test_which_hosts_are_loopback(host, loopback):
    assert is_loopback_host(host) is loopback


def test_insecure_allows_a_public_address_without_a_token():
    check_exposure("0.0.0.0", None, insecure=True)
    check_exposure("0.0.0.0", TOKEN, insecure=False)
    with pytest.raises(UsageError, match=r"refusing to listen on 0\.0\.0\.0"):
        check_exposure("0.0.0.0", None, insecure=False)
