"""The seed's side of afk's comparison bench: the seed's own client (``seed/t3_client.py``, run
unchanged but for its ``type`` alias line) with httpx, against the same T3 stand-in as afk.

Started by ``cargo bench -p afk --bench compare`` (through ``bench/run``), which interleaves its
own measurements with this process's, round by round, so that the load of a shared machine falls
on both alike. One JSON request per line on stdin, one JSON reply per line on stdout:

- ``{"op": "snapshot"}``: one ``T3Client.snapshot()`` (GET + ``json()``) and the per-thread
  status derivation the seed's watcher would make (``derive`` below, afk's rule from t3-api.md,
  "Deriving an attempt's state"), timed with ``perf_counter`` (wall) and ``process_time`` (CPU).
  Reply: ``{"secs", "cpu_secs", "fetch_secs", "threads", "running"}``.
- ``{"op": "parse", "path": P}``: ``json.loads`` of the file at P (read once, then kept), which
  is what the seed's ``resp.json()`` does with a snapshot body. Reply: ``{"secs"}``.
- ``{"op": "rss"}``: this process's peak resident memory so far. Reply: ``{"max_rss_bytes"}``.
- ``{"op": "dispatch", "count": K, "repo": R, "first_issue": I, "prompt": P}``: K sequential
  ``T3Client.dispatch(R, I + k, P)``. Reply: ``{"secs": [K latencies]}``.
- ``{"op": "quit"}``.

The seed speaks an older, simplified command shape (``{"command": "thread.create", "repo", ...}``)
and expects ``threadId`` in the create reply; T3 (and its stand-in) take the real commands of
t3-api.md and answer ``{"sequence": n}``. As the seed's tests would, the transport is wrapped
(``T3Wire``): it rewrites each seed body into the real command afk sends for the same dispatch
(same title, branch, model, modes and message text, ids minted per dispatch), posts it with httpx,
and adds the thread id it chose to the create reply. The seed's code runs unchanged.
"""

import argparse
import json
import os
import resource
import sys
import time
import uuid
from datetime import datetime, timezone

import httpx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from seed.t3_client import T3Client  # noqa: E402  (after the path is set)

_MODEL = "claude-sonnet-4-5"


def derive(thread):
    """The state of the attempt a thread carries (t3-api.md, "Deriving an attempt's state")."""
    if thread is None or thread.get("deletedAt"):
        return "lost"
    turn = thread.get("latestTurn")
    session = thread.get("session")
    turn_state = turn.get("state") if turn else None
    status = session.get("status") if session else None
    if turn_state == "error" or status == "error":
        return "failed"
    if turn_state == "running" or status in ("starting", "running"):
        return "running"
    if turn_state == "completed":
        return "succeeded"
    if turn_state == "interrupted":
        return "interrupted"
    return "starting"


def _now():
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Reply:
    """An httpx response whose ``json()`` may carry extra keys (the create's thread id)."""

    def __init__(self, response, extra=None):
        self._response = response
        self._extra = extra or {}

    def raise_for_status(self):
        return self._response.raise_for_status()

    def json(self):
        body = self._response.json()
        body.update(self._extra)
        return body


class T3Wire:
    """The seed's ``HttpClient`` over httpx, translating its command bodies to T3's real ones."""

    def __init__(self, http, projects):
        self._http = http
        self._projects = projects

    def get(self, url, headers):
        return self._http.get(url, headers=headers)

    def post(self, url, json, headers):
        command = json.get("command")
        if command == "thread.create":
            thread_id = str(uuid.uuid4())
            issue = json["issue"]
            body = {
                "type": "thread.create",
                "commandId": str(uuid.uuid4()),
                "threadId": thread_id,
                "projectId": self._projects[json["repo"]],
                "title": f"{json['repo']}#{issue}",
                "modelSelection": {"instanceId": json["modelSelection"]["instanceId"], "model": _MODEL},
                "runtimeMode": json["runtimeMode"],
                "interactionMode": "default",
                "branch": f"afk/issue-{issue}",
                "worktreePath": None,
                "createdAt": _now(),
            }
            reply = self._http.post(url, json=body, headers=headers)
            return _Reply(reply, {"threadId": thread_id})
        if command == "thread.turn.start":
            body = {
                "type": "thread.turn.start",
                "commandId": str(uuid.uuid4()),
                "threadId": json["threadId"],
                "message": {
                    "messageId": str(uuid.uuid4()),
                    "role": "user",
                    "text": json["message"]["text"],
                    "attachments": [],
                },
                "runtimeMode": "full-access",
                "interactionMode": "default",
                "createdAt": _now(),
            }
            return _Reply(self._http.post(url, json=body, headers=headers))
        raise ValueError(f"the seed sent a command this bench does not know: {command!r}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--project", action="append", default=[], help="REPO=PROJECT_ID")
    args = parser.parse_args()
    token = os.environ["AFK_BENCH_T3_TOKEN"]
    projects = dict(p.split("=", 1) for p in args.project)
    http = httpx.Client(timeout=120.0)
    client = T3Client(args.url, T3Wire(http, projects), lambda: token)
    documents = {}
    print(json.dumps({"ready": True, "python": sys.version.split()[0], "httpx": httpx.__version__}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        op = request["op"]
        if op == "snapshot":
            cpu = time.process_time()
            started = time.perf_counter()
            model = client.snapshot()
            fetched = time.perf_counter()
            states = {t["id"]: derive(t) for t in model["threads"]}
            secs = time.perf_counter() - started
            cpu = time.process_time() - cpu
            running = sum(1 for s in states.values() if s == "running")
            reply = {
                "secs": secs,
                "cpu_secs": cpu,
                "fetch_secs": fetched - started,
                "threads": len(states),
                "running": running,
            }
            del model, states
        elif op == "parse":
            path = request["path"]
            if path not in documents:
                with open(path, "rb") as f:
                    documents[path] = f.read()
            started = time.perf_counter()
            parsed = json.loads(documents[path])
            reply = {"secs": time.perf_counter() - started}
            del parsed
        elif op == "rss":
            # ru_maxrss is in kilobytes on Linux.
            reply = {"max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
        elif op == "dispatch":
            latencies = []
            for k in range(request["count"]):
                started = time.perf_counter()
                client.dispatch(request["repo"], request["first_issue"] + k, request["prompt"])
                latencies.append(time.perf_counter() - started)
            reply = {"secs": latencies}
        elif op == "quit":
            break
        else:
            reply = {"error": f"unknown op {op!r}"}
        print(json.dumps(reply), flush=True)
    http.close()


if __name__ == "__main__":
    main()
