#!/usr/bin/env python3
"""Simplified sliding sync (MSC4186) figures against any homeserver on loopback.

A new user joins N rooms (creates them). Then, from the client's side:
  * first page: a fresh sliding sync connection asks for the 20 newest rooms, with the
    required state and timeline limit Element X's room list asks for (median of --runs);
  * live update: a long-poll waits on the room list connection; a message is sent to the oldest
    room; from the start of the send until the long-poll's answer is read (median of --runs).
The homeserver must allow open registration (m.login.dummy) and not rate-limit room creation.

  python3 tests/bench/sliding.py --url http://127.0.0.1:8008 --rooms 1000 --runs 7
"""

import argparse
import concurrent.futures
import http.client
import json
import statistics
import threading
import time
import urllib.parse

SLIDING = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"
REQUIRED_STATE = [
    ["m.room.name", ""], ["m.room.encryption", ""], ["m.room.member", "$LAZY"],
    ["m.room.member", "$ME"], ["m.room.topic", ""], ["m.room.avatar", ""],
    ["m.room.canonical_alias", ""], ["m.room.power_levels", ""], ["m.room.join_rules", ""],
    ["m.room.tombstone", ""], ["m.room.create", ""], ["m.room.history_visibility", ""],
]
PAGE = {
    "conn_id": "room-list",
    "lists": {"all_rooms": {"ranges": [[0, 19]], "timeline_limit": 1, "required_state": REQUIRED_STATE}},
    "extensions": {"account_data": {"enabled": True}, "receipts": {"enabled": True},
                   "typing": {"enabled": True}},
}


class Client:
    """One keep-alive HTTP connection to the homeserver."""

    def __init__(self, url, token=None):
        parsed = urllib.parse.urlparse(url)
        if parsed.hostname not in ("127.0.0.1", "localhost", "::1") and not parsed.hostname.startswith("127."):
            raise SystemExit("only loopback homeservers")
        self.conn = http.client.HTTPConnection(parsed.hostname, parsed.port or 80, timeout=120)
        self.token = token

    def call(self, method, path, body=None):
        headers = {"content-type": "application/json"}
        if self.token:
            headers["authorization"] = "Bearer " + self.token
        self.conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        resp = self.conn.getresponse()
        data = resp.read()
        return resp.status, json.loads(data) if data else {}


def register(url, name, password):
    c = Client(url)
    body = {"username": name, "password": password}
    status, reply = c.call("POST", "/_matrix/client/v3/register", body)
    if status == 401:
        body["auth"] = {"type": "m.login.dummy", "session": reply.get("session")}
        status, reply = c.call("POST", "/_matrix/client/v3/register", body)
    if status != 200:
        raise SystemExit(f"register: {status} {reply}")
    return reply["access_token"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--rooms", type=int, default=1000)
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--label", default="homeserver")
    args = p.parse_args()

    token = register(args.url, f"ss{int(time.time())}", "sliding-bench-0")
    local = threading.local()

    def create(i):
        if not hasattr(local, "client"):
            local.client = Client(args.url, token)
        status, reply = local.client.call("POST", "/_matrix/client/v3/createRoom", {"name": f"Room {i}"})
        if status != 200:
            raise SystemExit(f"createRoom: {status} {reply}")
        return reply["room_id"]

    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        rooms = list(pool.map(create, range(args.rooms)))
    setup = time.monotonic() - start

    client = Client(args.url, token)
    first = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        status, reply = client.call("POST", SLIDING, PAGE)
        first.append(time.perf_counter() - t0)
        if status != 200 or len(reply.get("rooms", {})) != 20:
            raise SystemExit(f"first page: {status} {str(reply)[:300]}")

    live = []
    sender = Client(args.url, token)
    _, reply = client.call("POST", SLIDING, PAGE)
    for i in range(args.runs):
        answer = {}

        def poll(pos=reply["pos"]):
            answer["reply"] = client.call("POST", f"{SLIDING}?pos={urllib.parse.quote(pos)}&timeout=30000", PAGE)
            answer["at"] = time.perf_counter()

        t = threading.Thread(target=poll)
        t.start()
        time.sleep(0.2)
        t0 = time.perf_counter()
        room = urllib.parse.quote(rooms[i])
        status, _ = sender.call("PUT", f"/_matrix/client/v3/rooms/{room}/send/m.room.message/live{i}",
                                {"msgtype": "m.text", "body": "new"})
        t.join()
        if status != 200 or rooms[i] not in answer["reply"][1].get("rooms", {}):
            raise SystemExit(f"live update {i}: {answer['reply'][0]} {str(answer['reply'][1])[:300]}")
        live.append(answer["at"] - t0)
        reply = answer["reply"][1]

    ms = lambda xs: statistics.median(xs) * 1000
    print(f"{args.label}: {args.rooms} rooms created in {setup:.1f} s")
    print(f"{args.label}: first page of 20 (median of {args.runs}): {ms(first):.1f} ms")
    print(f"{args.label}: send start to long-poll answer (median of {args.runs}): {ms(live):.1f} ms")


if __name__ == "__main__":
    main()
