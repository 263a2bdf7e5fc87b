"""A stand-in for Determined 0.38.1's master on 127.0.0.1, as its Python SDK sees it.

SdkMaster serves one experiment and exactly the REST calls that client.Determined() and
glue_results.experiment_results make (paths and shapes as common/api/bindings.py parses them):
log in (POST /api/v1/auth/login, GET /api/v1/me for a cached token), the experiment, its
trials (paginated), each trial's metrics of a group (streamed, one JSON object a line, with
validations stored under "validation_metrics" as the master keeps them) and its checkpoints,
a checkpoint by its uuid (what client.get_checkpoint asks), and a checkpoint as a tar.gz
(GET /checkpoints/<uuid>, the SDK's download through the master).
Lists come in the order the test gives (the master sorts checkpoints as asked; nothing here
depends on that order).
Every request lands in `requests`; one it does not know gets a 404 and lands in `unknown`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import pathlib
import re
import tarfile
import threading
import urllib.parse
from collections.abc import Callable

from determined.common import api
from fake_master import Request, error, serve

TIME = "2025-01-01T00:00:00Z"
TOKEN = "fake-user-token"


@dataclasses.dataclass
class FakeCheckpoint:
    uuid: str
    steps_completed: int
    state: str = "STATE_COMPLETED"


@dataclasses.dataclass
class FakeTrial:
    id: int
    hparams: dict
    state: str  # a trialv1State value, e.g. "STATE_COMPLETED"
    validations: list[tuple[int, dict]] = dataclasses.field(
        default_factory=list
    )  # (steps, metrics)
    checkpoints: list[FakeCheckpoint] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class SdkMaster:
    """The master of one experiment. `storage`: its checkpoint_storage config; `agent_storage`:
    where the checkpoints' files lie as the agents see them (what a download through the master
    packs up)."""

    experiment_id: int
    trials: list[FakeTrial]
    storage: dict
    agent_storage: pathlib.Path
    user: str = "glue"
    password: str = "Glue-Pass-1"
    requests: list[Request] = dataclasses.field(default_factory=list)
    unknown: list[Request] = dataclasses.field(default_factory=list)
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def logins(self) -> list[Request]:
        return [r for r in self.requests if r.path == "/api/v1/auth/login"]

    def config(self) -> dict:
        return {
            "name": "glue",
            "data": {"model_name_or_path": "bert-base-uncased", "data_dir": "/tmp/glue_data"},
            "checkpoint_storage": self.storage,
            "searcher": {"name": "grid", "metric": "glue_score", "smaller_is_better": False},
        }

    def trial(self, match: re.Match) -> FakeTrial | None:
        return next((t for t in self.trials if t.id == int(match["trial"])), None)

    # --- the endpoints: each takes the request's match and body, returns (status, payload).

    def login(self, match: re.Match, body: dict) -> tuple[int, object]:
        if body != {
            "username": self.user,
            "password": api.salt_and_hash(self.password),
            "isHashed": True,
        }:
            return error(401, "invalid credentials")  # codes.Unauthenticated, as the master
        return 200, {"token": TOKEN, "user": self.user_json()}

    def me(self, match: re.Match, body: None) -> tuple[int, object]:
        return 200, {"user": self.user_json()}

    def user_json(self) -> dict:
        return {"username": self.user, "admin": False, "active": True, "id": 2}

    def get_experiment(self, match: re.Match, body: None) -> tuple[int, object]:
        if int(match["experiment"]) != self.experiment_id:
            return error(404, f"experiment not found: {match['experiment']}")
        experiment = {
            "archived": False,
            "config": self.config(),
            "id": self.experiment_id,
            "jobId": "job-1",
            "name": "glue",
            "numTrials": len(self.trials),
            "originalConfig": json.dumps(self.config()),
            "projectId": 1,
            "projectOwnerId": 1,
            "searcherType": "grid",
            "startTime": TIME,
            "state": "STATE_COMPLETED",
            "username": self.user,
        }
        return 200, {"experiment": experiment}

    def experiment_trials(self, match: re.Match, body: None, query: dict) -> tuple[int, object]:
        if int(match["experiment"]) != self.experiment_id:
            return error(404, f"experiment not found: {match['experiment']}")
        trials, pagination = page([self.trial_json(t) for t in self.trials], query)
        return 200, {"trials": trials, "pagination": pagination}

    def trial_json(self, trial: FakeTrial) -> dict:
        return {
            "experimentId": self.experiment_id,
            "hparams": trial.hparams,
            "id": trial.id,
            "restarts": 0,
            "startTime": TIME,
            "state": trial.state,
            "totalBatchesProcessed": max((s for s, _ in trial.validations), default=0),
        }

    def trial_metrics(self, match: re.Match, body: None, query: dict) -> tuple[int, object]:
        """Validations are the only metrics this master holds; one line per trial that has any
        (the master sends none for a trial without)."""
        wanted = {int(i) for i in query["trialIds"]}
        lines = [
            json.dumps({"result": {"metrics": validation_reports(t)}})
            for t in sorted(self.trials, key=lambda t: t.id)
            if t.id in wanted and t.validations and query["group"] == ["validation"]
        ]
        return 200, "".join(line + "\n" for line in lines).encode()

    def trial_checkpoints(self, match: re.Match, body: None, query: dict) -> tuple[int, object]:
        trial = self.trial(match)
        if trial is None:
            return error(404, "trial not found")
        checkpoints, pagination = page(
            [self.checkpoint_json(trial, c) for c in trial.checkpoints], query
        )
        return 200, {"checkpoints": checkpoints, "pagination": pagination}

    def checkpoint_json(self, trial: FakeTrial, checkpoint: FakeCheckpoint) -> dict:
        validation = dict(trial.validations).get(checkpoint.steps_completed)
        return {
            "uuid": checkpoint.uuid,
            "state": checkpoint.state,
            "metadata": {"steps_completed": checkpoint.steps_completed, "framework": "torch"},
            "resources": {},
            "reportTime": TIME,
            "training": {
                "trialId": trial.id,
                "experimentId": self.experiment_id,
                "experimentConfig": self.config(),
                "hparams": trial.hparams,
                "validationMetrics": {"avgMetrics": validation},
            },
        }

    def get_checkpoint(self, match: re.Match, body: None) -> tuple[int, object]:
        for trial in self.trials:
            for checkpoint in trial.checkpoints:
                if checkpoint.uuid == match["uuid"]:
                    return 200, {"checkpoint": self.checkpoint_json(trial, checkpoint)}
        return error(404, f"checkpoint {match['uuid']} not found")

    def checkpoint_tar(self, match: re.Match, body: None) -> tuple[int, object]:
        folder = self.agent_storage / match["uuid"]
        if not folder.is_dir():
            return error(404, f"checkpoint {match['uuid']} not found")
        packed = io.BytesIO()
        with tarfile.open(fileobj=packed, mode="w:gz") as tar:
            for path in sorted(folder.rglob("*")):
                tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)
        return 200, packed.getvalue()

    def routes(self) -> list[tuple[str, str, Callable, bool]]:
        """(method, path pattern, endpoint, whether it takes the query) for each endpoint."""
        experiment = r"/api/v1/experiments/(?P<experiment>\d+)"
        return [
            ("POST", r"/api/v1/auth/login", self.login, False),
            ("GET", r"/api/v1/me", self.me, False),
            ("GET", experiment, self.get_experiment, False),
            ("GET", experiment + "/trials", self.experiment_trials, True),
            ("GET", r"/api/v1/trials/metrics/trial_metrics", self.trial_metrics, True),
            ("GET", r"/api/v1/trials/(?P<trial>\d+)/checkpoints", self.trial_checkpoints, True),
            ("GET", r"/api/v1/checkpoints/(?P<uuid>[0-9a-f-]+)", self.get_checkpoint, False),
            ("GET", r"/checkpoints/(?P<uuid>[0-9a-f-]+)", self.checkpoint_tar, False),
        ]

    def handle(self, method: str, url: str, headers, raw: bytes) -> tuple[int, object]:
        parsed = urllib.parse.urlsplit(url)
        query = urllib.parse.parse_qs(parsed.query)
        request = Request(method, parsed.path, query, json.loads(raw) if raw else None)
        with self._lock:
            for route_method, pattern, endpoint, takes_query in self.routes():
                match = re.fullmatch(pattern, parsed.path)
                if method != route_method or not match:
                    continue
                self.requests.append(request)
                if endpoint != self.login and headers.get("Authorization") != f"Bearer {TOKEN}":
                    return error(401, "invalid credentials")
                if takes_query:
                    return endpoint(match, request.body, query)
                return endpoint(match, request.body)
            self.unknown.append(request)
        return error(404, f"no route {method} {parsed.path}")

    def serving(self) -> contextlib.AbstractContextManager[str]:
        """Serves on a free loopback port; yields the master URL."""
        return serve(self.handle)


def page(items: list, query: dict) -> tuple[list, dict]:
    """One page of a list as the master cuts it (`limit` 0 or absent: the rest), and its
    v1Pagination."""
    offset = int(query.get("offset", ["0"])[0])
    limit = int(query.get("limit", ["0"])[0])
    end = len(items) if limit == 0 else min(len(items), offset + limit)
    pagination = {
        "offset": offset,
        "limit": limit,
        "startIndex": offset,
        "endIndex": end,
        "total": len(items),
    }
    return items[offset:end], pagination


def validation_reports(trial: FakeTrial) -> list[dict]:
    """The trial's validations as v1MetricsReports, as the master reads its metrics table."""
    return [
        {
            "archived": False,
            "endTime": TIME,
            "group": "validation",
            "id": trial.id * 1000 + steps,
            "metrics": {"validation_metrics": metrics},
            "totalBatches": steps,
            "trialId": trial.id,
            "trialRunId": 1,
        }
        for steps, metrics in trial.validations
    ]
