#!/usr/bin/env python3
"""Append cost against room size, over the Client-Server API.

Registers users, fills one room with SMALL members and another with LARGE members, then times
message sends and state events (topic changes) into each, one at a time. Standard library only.

    python3 bench/append_cost.py http://127.0.0.1:8008 [SMALL] [LARGE] [SENDS]

Run the server with rate limits off (ROOST_RATE_LIMITS__ENABLED=false) and registration open.
"""
import json
import statistics
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

BASE = sys.argv[1]
SMALL = int(sys.argv[2]) if len(sys.argv) > 2 else 10
LARGE = int(sys.argv[3]) if len(sys.argv) > 3 else 5000
SENDS = int(sys.argv[4]) if len(sys.argv) > 4 else 300
PASSWORD = "bench password 1"


def call(method, path, body=None, token=None):
    req = urllib.request.Request(BASE + path, method=method,
                                 data=None if body is None else json.dumps(body).encode())
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def register(name):
    status, body = call("POST", "/_matrix/client/v3/register",
                        {"username": name, "password": PASSWORD, "auth": {"type": "m.login.dummy"}})
    if status != 200:
        raise SystemExit(f"register {name}: {status} {body}")
    return body["access_token"]


def ms(samples):
    samples = sorted(samples)
    return (f"p50 {statistics.median(samples) * 1000:.2f} ms, "
            f"p99 {samples[int(len(samples) * 0.99) - 1] * 1000:.2f} ms")


def timed(fn, n):
    out = []
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t)
    return out


def main():
    tag = str(int(time.time()))
    owner = register(f"owner{tag}")
    with ThreadPoolExecutor(8) as pool:
        tokens = list(pool.map(register, [f"u{tag}x{i}" for i in range(LARGE)]))
    rooms = {}
    for size in (SMALL, LARGE):
        _, body = call("POST", "/_matrix/client/v3/createRoom", {"preset": "public_chat"}, owner)
        room = body["room_id"]
        joins = []
        for token in tokens[:size - 1]:
            t = time.perf_counter()
            status, body = call("POST", f"/_matrix/client/v3/rooms/{room}/join", {}, token)
            joins.append(time.perf_counter() - t)
            assert status == 200, body
        rooms[size] = room
        if joins:
            print(f"{size:>5} members: joins, first 100: {ms(joins[:100])}; last 100: {ms(joins[-100:])}")
    for size, room in rooms.items():
        def send(i, room=room):
            status, body = call("PUT", f"/_matrix/client/v3/rooms/{room}/send/m.room.message/b{size}t{i}",
                                {"msgtype": "m.text", "body": f"message {i}"}, owner)
            assert status == 200, body

        def topic(i, room=room):
            status, body = call("PUT", f"/_matrix/client/v3/rooms/{room}/state/m.room.topic",
                                {"topic": f"topic {i}"}, owner)
            assert status == 200, body
        print(f"{size:>5} members: message append {ms(timed(send, SENDS))}; "
              f"state append {ms(timed(topic, SENDS // 3))}")


main()
