"""A local stand-in for ZeroGPU's device API (the service `spaces` asks for a GPU before each call).

Standard library only. It speaks the protocol `spaces` 0.51.x speaks (see `../shared/REFERENCE.md`,
"ZeroGPU's own code path on a CPU machine"):

    POST /startup-report                                   once, at launch                  -> 200
    POST /schedule?cgroupPath&taskId&enableQueue&tokenVersion[&durationSeconds][&gpuSize]   per call
         granted:        200 JSON {"idle", "nvidiaIndex", "nvidiaUUID", "allowToken"}
                         or 200 text/event-stream: "event: ping", then "event: succeeded" + that JSON
         no GPU:         503
         quota exceeded: 429 JSON {"left": seconds, "wait": seconds}  (a negative wait = illegal duration)
         queue timeout:  200 text/event-stream: "event: ping", then "event: failed"
    POST /allow?allowToken&pid                             from the forked worker            -> 200
    POST /release?allowToken&fail                          when the call ends                -> 200

Every request is logged (`DeviceAPI.log`: endpoint, parameters, status, time) so that tests can assert the
order schedule -> allow -> release and the `durationSeconds` each call asked for. Answers are chosen by a
`Policy` (the default for every call) and an optional queue of one-off answers (`answer_next`).

    api = DeviceAPI().start()            # http://127.0.0.1:<port>
    api.answer_next("no-gpu")            # the next /schedule gets a 503
    ...
    api.stop()
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

ANSWERS = ("grant", "no-gpu", "quota", "queue-timeout")
"""What /schedule can answer: a GPU, 503 "no GPU", 429 "quota exceeded", or a queue that gives up."""


@dataclass
class Policy:
    """How the stand-in answers /schedule when no one-off answer is queued.

    answer: one of ANSWERS. stream: grant (and queue) through the event-stream form instead of plain JSON.
    idle: the `idle` flag of a grant; False makes `spaces` start a new worker process for every call, True
    lets it reuse the last one. max_duration_s: a request for more seconds is refused as 429 with a negative
    wait ("illegal duration"), as ZeroGPU does; None = no limit. quota_left_s / quota_wait_s: the body of a
    429 (seconds of quota left, seconds until it refills).
    """

    answer: str = "grant"
    stream: bool = False
    idle: bool = False
    max_duration_s: int | None = None
    quota_left_s: int = 0
    quota_wait_s: int = 3600

    def __post_init__(self) -> None:
        if self.answer not in ANSWERS:
            raise ValueError(f"answer must be one of {ANSWERS}, not {self.answer!r}")


@dataclass
class Request:
    """One logged request: endpoint ("schedule", "allow", ...), its query parameters, the status answered,
    for /schedule the answer's kind (one of ANSWERS, or "illegal-duration") and a grant's `idle` flag, and the
    time (time.monotonic)."""

    endpoint: str
    params: dict[str, str]
    status: int
    answer: str | None = None
    idle: bool | None = None
    time: float = field(default_factory=time.monotonic)


class DeviceAPI:
    """The stand-in server on 127.0.0.1 (a stdlib ThreadingHTTPServer in a daemon thread)."""

    def __init__(self, policy: Policy | None = None, port: int = 0):
        self.policy = policy or Policy()
        self.log: list[Request] = []
        self._one_off: list[str] = []
        self._granted: dict[str, int] = {}  # allowToken -> durationSeconds asked
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> DeviceAPI:
        self._thread = threading.Thread(target=self._server.serve_forever, name="zerogpu-device-api", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> DeviceAPI:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def answer_next(self, *answers: str) -> None:
        """Answer the next /schedule requests with `answers` (each one of ANSWERS), in order, whatever the
        policy says; e.g. answer_next("grant", "no-gpu") lets one call through and refuses the one after."""
        for answer in answers:
            if answer not in ANSWERS:
                raise ValueError(f"answer must be one of {ANSWERS}, not {answer!r}")
        with self._lock:
            self._one_off.extend(answers)

    def unused_answers(self) -> list[str]:
        """Drop the one-off answers no call has taken yet and return them (a test that queued more answers
        than its calls used must not leave them to the next test)."""
        with self._lock:
            left, self._one_off[:] = list(self._one_off), []
        return left

    def requests(self, endpoint: str | None = None) -> list[Request]:
        """The log so far (a copy), optionally only one endpoint's requests."""
        with self._lock:
            return [r for r in self.log if endpoint is None or r.endpoint == endpoint]

    def calls(self) -> list[dict]:
        """One dict per granted /schedule, in order: duration (s asked), token, idle (the grant's flag), pids
        (allowed by /allow: none when spaces reused an idle worker, which allows only once), released (bool),
        failed (the release's `fail` flag), seconds from schedule to release (None until released)."""
        with self._lock:
            log = list(self.log)
        calls = []
        for request in log:
            if request.endpoint == "schedule" and request.answer == "grant":
                calls.append({"duration": int(request.params.get("durationSeconds", 60)),
                              "token": request.params["allowToken"], "idle": request.idle, "pids": [],
                              "scheduled_at": request.time, "released": False, "failed": None, "seconds": None})
        by_token = {call["token"]: call for call in calls}
        for request in log:
            call = by_token.get(request.params.get("allowToken", ""))
            if call is None:
                continue
            if request.endpoint == "allow":
                call["pids"].append(int(request.params["pid"]))
            elif request.endpoint == "release":
                call["released"] = True
                call["failed"] = request.params.get("fail", "").lower() == "true"
                call["seconds"] = request.time - call["scheduled_at"]
        for call in calls:
            call.pop("scheduled_at")
        return calls

    # ----- answers

    def _schedule(self, params: dict[str, str]) -> tuple[str, int, dict]:
        with self._lock:
            answer = self._one_off.pop(0) if self._one_off else self.policy.answer
        policy = self.policy
        duration = int(params.get("durationSeconds", 60))
        if answer == "grant" and policy.max_duration_s is not None and duration > policy.max_duration_s:
            return "illegal-duration", 429, {"left": policy.max_duration_s, "wait": -1}
        if answer == "no-gpu":
            return answer, 503, {}
        if answer == "quota":
            return answer, 429, {"left": policy.quota_left_s, "wait": policy.quota_wait_s}
        if answer == "queue-timeout":
            return answer, 200, {}
        token = uuid.uuid4().hex
        with self._lock:
            self._granted[token] = duration
        params["allowToken"] = token
        return answer, 200, {"idle": policy.idle, "nvidiaIndex": 0, "nvidiaUUID": "GPU-zerogpu-local-0",
                             "allowToken": token}


def _handler(api: DeviceAPI):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # the DeviceAPI log is the record; keep stderr quiet
            pass

        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            parts = urlsplit(self.path)
            endpoint = parts.path.strip("/")
            params = dict(parse_qsl(parts.query))
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            if endpoint == "schedule":
                answer, status, body = api._schedule(params)
                stream = answer == "queue-timeout" or (answer == "grant" and api.policy.stream)
                self._record(endpoint, params, status, answer, api.policy.idle if answer == "grant" else None)
                if stream:
                    last = "failed" if answer == "queue-timeout" else "succeeded"
                    self._stream(["event: ping\n\n", f"event: {last}\n" + (f"data: {json.dumps(body)}\n"
                                                                          if body else "") + "\n"])
                else:
                    self._json(status, body)
            elif endpoint in ("startup-report", "allow", "release"):
                known = endpoint == "startup-report" or params.get("allowToken") in api._granted
                status = 200 if known else 404
                self._record(endpoint, params, status)
                self._json(status, {})
            else:
                self._record(endpoint, params, 404)
                self._json(404, {"detail": "unknown endpoint"})

        def do_GET(self) -> None:  # noqa: N802
            parts = urlsplit(self.path)
            endpoint = parts.path.strip("/")
            self._record(endpoint, dict(parse_qsl(parts.query)), 200 if endpoint == "queue-size" else 404)
            self._json(200, 0.0) if endpoint == "queue-size" else self._json(404, {"detail": "unknown endpoint"})

        def _record(self, endpoint, params, status, answer=None, idle=None) -> None:
            with api._lock:
                api.log.append(Request(endpoint, params, status, answer, idle))

        def _json(self, status: int, body) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _stream(self, events: list[str]) -> None:
            # one write per event: spaces parses each chunk it reads as one event (api.sse_stream)
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            for event in events:
                self.wfile.write(event.encode())
                self.wfile.flush()
                time.sleep(0.05)
            self.close_connection = True

    return Handler
