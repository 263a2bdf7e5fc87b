"""A stand-in for Determined 0.38.1's master on 127.0.0.1, and the container files of a trial.

FakeMaster serves the REST calls that the harness makes during a PyTorchTrial's life
(determined/core/_context.py, _train.py, _metrics.py, _checkpoint.py, _preempt.py and
pytorch/_pytorch_trial.py call them; paths as in common/api/bindings.py) for a trial that is
never preempted, records each one (an early exit's reason too),
serves what a container's start asks for (prep_container.py: the uploaded context directory,
`context_tgz`, and one container's rendezvous),
and answers GetTrial with the trial's state, which a test (or stop_after_validations) flips
to STOPPING_COMPLETED as adaptive ASHA's early stop does, and its latest validation. As the real
master does, it decides while it handles a validation report, and holds the validation only
after it has decided (master/internal/api_trials.go, ReportTrialMetrics). The harness reports
from a background thread, so with `decision_delay_s` the trial trains on while the master
decides, and its state changes some time after the report, whenever the master gets to it.
A request it does not know gets a 404 and lands in `unknown`.

write_container() lays out what prep_container.py leaves in a trial container: the cluster
info files and the model directory's clean copy; tests/fake_container/sitecustomize.py points
Determined at them (container_env()).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import http.server
import json
import os
import pathlib
import re
import secrets
import shutil
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterator

import determined as det
from determined.common import detignore

TOKEN = "fake-task-token"
RUNNING, STOPPING_COMPLETED = "STATE_RUNNING", "STATE_STOPPING_COMPLETED"
FAKE_CONTAINER = pathlib.Path(__file__).resolve().parent / "fake_container"
PREEMPTION_POLL_CAP_S = 1.0  # the harness long-polls for 60 s; answer "no" sooner


def error(status: int, message: str) -> tuple[int, dict]:
    """An error as the master's gRPC gateway writes it (what api.errors.APIException parses)."""
    return status, {"error": {"code": status, "reason": "fake", "error": message}}


@dataclasses.dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: object
    status: int = 200
    answer: object = None


@dataclasses.dataclass
class FakeMaster:
    """The master's side of one trial. `stop_after_validations`: flip the trial's state to
    STOPPING_COMPLETED when that many validations have been reported. `decision_delay_s`: how
    long handling a validation report takes (the searcher deciding); GetTrial answers as before
    it until then. `failing_trial_gets`: answer those GetTrial calls (counted from 1) with 503
    (a master briefly unavailable)."""

    smaller_is_better: bool
    metric: str
    trial_id: int = 1
    stop_after_validations: int | None = None
    decision_delay_s: float = 0.0
    failing_trial_gets: frozenset[int] = frozenset()
    context_tgz: bytes = b""  # the experiment's uploaded folder, a .tar.gz
    state: str = RUNNING
    requests: list[Request] = dataclasses.field(default_factory=list)
    unknown: list[Request] = dataclasses.field(default_factory=list)
    # The last batch the trial had reported when GetTrial first answered a stopping state.
    stop_answered_at: int | None = None
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    _closing: threading.Event = dataclasses.field(default_factory=threading.Event)

    def metrics(self, group: str) -> list[dict]:
        """The reported metrics of one group ("training", "validation"): v1TrialMetrics."""
        return [
            r.body["metrics"]
            for r in self.requests
            if re.fullmatch(r"/api/v1/trials/\d+/metrics", r.path) and r.body["group"] == group
        ]

    def checkpoints(self) -> list[dict]:
        """The reported checkpoints (v1Checkpoint), in order."""
        return [r.body for r in self.requests if r.path == "/api/v1/checkpoints"]

    def early_exits(self) -> list[str]:
        """The reasons of the trial's reported early exits (v1TrialEarlyExit), in order."""
        return [r.body["reason"] for r in self.requests if r.path.endswith("/early_exit")]

    def trial_gets(self) -> list[Request]:
        return [r for r in self.requests if r.path == f"/api/v1/trials/{self.trial_id}"]

    def latest_validation(self) -> dict | None:
        """The validation the master holds last, as GetTrial gives it (v1MetricsWorkload)."""
        validations = self.metrics("validation")
        if not validations:
            return None
        latest = validations[-1]
        return {
            "metrics": latest["metrics"],
            "numInputs": 0,
            "totalBatches": latest["stepsCompleted"],
        }

    def last_reported_batch(self) -> int:
        reports = self.metrics("training") + self.metrics("validation")
        return max((m["stepsCompleted"] for m in reports), default=0)

    # --- the endpoints: each takes the request's match and body, returns (status, JSON body).

    def run_prepare(self, match: re.Match, body: dict) -> tuple[int, dict]:
        return 200, {"storageId": 1}

    def empty(self, match: re.Match, body: object) -> tuple[int, dict]:
        return 200, {}

    def report_metrics(self, match: re.Match, body: dict) -> tuple[int, dict]:
        due = self.stop_after_validations
        if (
            body["group"] == "validation"
            and due is not None
            and len(self.metrics("validation")) >= due
        ):
            self.state = STOPPING_COMPLETED
        return 200, {}

    def get_trial(self, match: re.Match, body: None) -> tuple[int, dict]:
        if len(self.trial_gets()) in self.failing_trial_gets:
            return error(503, "master restarting")
        if self.state != RUNNING and self.stop_answered_at is None:
            self.stop_answered_at = self.last_reported_batch()
        trial = {
            "id": self.trial_id,
            "experimentId": 1,
            "hparams": {},
            "restarts": 0,
            "startTime": "2025-01-01T00:00:00Z",
            "state": self.state,
            "totalBatchesProcessed": self.last_reported_batch(),
            "latestValidation": self.latest_validation(),
        }
        return 200, {"trial": trial}

    def best_validation(self, match: re.Match, body: None) -> tuple[int, dict]:
        values = [m["metrics"]["avgMetrics"][self.metric] for m in self.metrics("validation")]
        if not values:
            return error(404, "no validations yet")
        return 200, {"metric": min(values) if self.smaller_is_better else max(values)}

    def preemption(self, match: re.Match, body: None) -> tuple[int, dict]:
        self._closing.wait(PREEMPTION_POLL_CAP_S)  # a long poll that never preempts
        return 200, {"preempt": False}

    def context_directory(self, match: re.Match, body: None) -> tuple[int, dict]:
        return 200, {"b64Tgz": base64.b64encode(self.context_tgz).decode()}

    def rendezvous(self, match: re.Match, body: None) -> tuple[int, dict]:
        return 200, {"rendezvousInfo": {"addresses": ["127.0.0.1"], "rank": 0, "slots": [1]}}

    def routes(self) -> list[tuple[str, str, Callable]]:
        trial = r"/api/v1/trials/\d+"
        allocation = r"/api/v1/allocations/[^/]+"
        return [
            ("GET", r"/api/v1/tasks/[^/]+/context_directory", self.context_directory),
            ("POST", allocation + "/acceleratorData", self.empty),
            ("GET", allocation + r"/resources/[^/]+/rendezvous", self.rendezvous),
            ("POST", r"/api/v1/runs/start", self.run_prepare),
            ("POST", trial + "/runner/metadata", self.empty),
            ("POST", trial + "/metrics", self.report_metrics),
            ("POST", trial + "/progress", self.empty),
            ("POST", trial + "/early_exit", self.empty),
            ("GET", trial, self.get_trial),
            ("POST", r"/api/v1/checkpoints", self.empty),
            (
                "GET",
                r"/api/v1/experiments/\d+/searcher/best_searcher_validation_metric",
                self.best_validation,
            ),
            ("GET", r"/api/v1/allocations/[^/]+/signals/preemption", self.preemption),
        ]

    def handle(self, method: str, url: str, headers, raw: bytes) -> tuple[int, dict]:
        parsed = urllib.parse.urlsplit(url)
        body = json.loads(raw) if raw else None
        request = Request(method, parsed.path, urllib.parse.parse_qs(parsed.query), body)
        if headers.get("Grpc-Metadata-x-allocation-token") != f"Bearer {TOKEN}":
            request.status = 401
            with self._lock:
                self.requests.append(request)
            return error(401, "no task session token")
        for route_method, pattern, endpoint in self.routes():
            match = re.fullmatch(pattern, parsed.path)
            if method == route_method and match:
                if endpoint == self.report_metrics and body["group"] == "validation":
                    self._closing.wait(self.decision_delay_s)  # other requests are answered
                with self._lock:
                    self.requests.append(request)
                    if endpoint != self.preemption:  # a long poll waits, with the lock free
                        request.status, request.answer = endpoint(match, body)
                        return request.status, request.answer
                return endpoint(match, body)
        request.status = 404
        with self._lock:
            self.unknown.append(request)
        return error(404, f"no route {method} {parsed.path}")

    @contextlib.contextmanager
    def serving(self) -> Iterator[str]:
        """Serves on a free loopback port; yields the master URL."""
        with serve(self.handle) as url:
            try:
                yield url
            finally:
                self._closing.set()  # a long poll still waiting answers now


@contextlib.contextmanager
def serve(handle: Callable[[str, str, object, bytes], tuple[int, object]]) -> Iterator[str]:
    """Serves handle(method, path, headers, body) -> (status, JSON value or bytes) on a free
    loopback port; yields its URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            status, answer = handle(self.command, self.path, self.headers, self.rfile.read(length))
            payload = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PATCH = _answer

        def log_message(self, *args) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def write_container(
    root: pathlib.Path,
    repo: pathlib.Path,
    master_url: str,
    config: dict,
    hparams: dict,
    slots: int = 1,
    latest_checkpoint: str | None = None,
    steps_completed: int = 0,
    run_id: int = 1,
) -> pathlib.Path:
    """The files of trial 1's run `run_id`, as prep_container.py writes them; returns the work
    directory (the model directory's copy, filtered by .detignore as the CLI uploads it)."""
    info = root / "info"
    info.mkdir(parents=True, exist_ok=True)
    det.ClusterInfo(
        master_url=master_url,
        cluster_id="fake-cluster",
        agent_id="fake-agent",
        slot_ids=list(range(slots)),
        task_id="1.1",
        allocation_id=f"1.1.{run_id}.{secrets.token_hex(4)}",  # unique: the launcher's socket
        session_token=TOKEN,
        task_type="TRIAL",
        latest_checkpoint=latest_checkpoint,
    )._to_file(str(info / "cluster.json"))
    det.TrialInfo(
        trial_id=1,
        experiment_id=1,
        trial_seed=7,
        hparams=hparams,
        config=config,
        steps_completed=steps_completed,
        trial_run_id=run_id,
        debug=False,
        inter_node_network_interface=None,
    )._to_file(str(info / "trial.json"))
    det.RendezvousInfo(["127.0.0.1"], 0, [slots])._to_file(str(info / "rendezvous.json"))
    det.ResourcesInfo(gpu_uuids=[])._to_file(str(info / "resources.json"))
    model = root / "train" / "model"
    if model.exists():
        shutil.rmtree(model)
    shutil.copytree(repo, model, ignore=detignore.make_shutil_ignore(repo))
    return model


def container_env(root: pathlib.Path, ports: list[int]) -> dict[str, str]:
    """The environment of a trial process in the container at root; ports: 3 free TCP ports
    (torch.distributed's rendezvous and Determined's two inter-process ports)."""
    python_bin = os.path.dirname(sys.executable)  # the launcher runs "python3"
    return {
        **os.environ,
        "FAKE_CONTAINER_ROOT": str(root),
        "PYTHONPATH": os.pathsep.join([str(FAKE_CONTAINER), os.environ.get("PYTHONPATH", "")]),
        "PATH": os.pathsep.join([python_bin, os.environ["PATH"]]),
        "DET_USER": "determined",
        "DET_SESSION_TOKEN": TOKEN,
        "NO_PROXY": "127.0.0.1,localhost",
        "C10D_PORT": str(ports[0]),
        "INTER_TRAIN_PROCESS_COMM_PORT_1": str(ports[1]),
        "INTER_TRAIN_PROCESS_COMM_PORT_2": str(ports[2]),
        "OMP_NUM_THREADS": "1",
    }
