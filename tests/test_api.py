"""Decision API: a real uvicorn server (python -m segment_warehouse.api) over a socket."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_personalisation_decide import RULES, profile, write_inputs

from segment_warehouse.config import Settings, get_settings
from segment_warehouse.personalisation import decide
from segment_warehouse.publish import publish_snapshot

KEYS = ["customer_id", "slot", "content_id", "rule_id", "experiment_id", "variant"]
PEOPLE = [
    profile("v1", rfm="Champions"),
    profile("plain"),
    profile("refused", consent=False, rfm="Champions"),
]
ANONYMOUS = {"anon-v1": "v1", "anon-refused": "refused"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def get(self, path: str) -> tuple[int, dict, str]:
        self.conn.request("GET", path)
        resp = self.conn.getresponse()
        body = json.loads(resp.read())
        return resp.status, body, resp.getheader("X-Snapshot") or ""


# Both snapshot formats: tables in analytics.duckdb, or its views over Parquet files.
@pytest.fixture(params=["duckdb", "parquet"])
def env(
    segments_env: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Settings:
    monkeypatch.setenv("SEGMENTS_PUBLISH_FORMAT", request.param)
    rules = segments_env / "content_rules.yml"
    rules.write_text(RULES)
    monkeypatch.setenv("SEGMENTS_CONTENT_RULES", str(rules))
    monkeypatch.setenv("SEGMENTS_DUCKDB_THREADS", "1")
    return get_settings()


def publish(settings: Settings, day: str = "2026-12-05") -> None:
    decide(run_id=f"run-{day}", as_of=day)
    publish_snapshot(run_id=f"run-{day}", settings=settings)


@pytest.fixture
def server(env: Settings) -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "segment_warehouse.api", "--port", str(port),
         "--log-level", "warning"],
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.stdout.read().decode() if proc.stdout else ""
                proc.kill()
                raise RuntimeError(f"API did not start: {out}") from None
            time.sleep(0.1)
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def wait_for(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


@pytest.fixture
def published(env: Settings) -> Settings:
    write_inputs(env, PEOPLE, anonymous_ids=ANONYMOUS)
    publish(env)
    return env


def test_contract(published: Settings, server: int) -> None:
    c = Client(server)
    status, body, snapshot = c.get("/v1/decisions?customer_id=v1&slot=home_hero")
    assert status == 200 and list(body) == KEYS and snapshot
    assert body == {"customer_id": "v1", "slot": "home_hero", "content_id": "hero_vip",
                    "rule_id": "vip", "experiment_id": None, "variant": None}
    default = {"slot": "home_hero", "content_id": "hero_generic", "rule_id": None,
               "experiment_id": None, "variant": None}
    for who in ("plain", "refused", "never-seen"):
        assert c.get(f"/v1/decisions?customer_id={who}&slot=home_hero")[1] == {
            "customer_id": who, **default}
    assert c.get("/v1/decisions?anonymous_id=anon-v1&slot=home_hero")[1]["rule_id"] == "vip"
    assert c.get("/v1/decisions?anonymous_id=anon-v1&slot=home_hero")[1]["customer_id"] == "v1"
    assert c.get("/v1/decisions?anonymous_id=anon-refused&slot=home_hero")[1] == {
        "customer_id": "refused", **default}
    assert c.get("/v1/decisions?anonymous_id=stranger&slot=home_hero")[1] == {
        "customer_id": None, **default}
    long_id = "v1" + "x" * 500  # longer than any stored id: never a false match
    assert c.get(f"/v1/decisions?customer_id={long_id}&slot=home_hero")[1]["rule_id"] is None

    status, body, _ = c.get("/v1/decisions?customer_id=v1&slot=footer")
    assert status == 404 and "unknown slot" in body["error"]
    assert set(body["slots"]) == {"home_hero", "email_banner"}
    for path in ("/v1/decisions?customer_id=v1", "/v1/decisions?slot=home_hero",
                 "/v1/decisions?customer_id=v1&anonymous_id=a&slot=home_hero"):
        status, body, _ = c.get(path)
        assert status == 422 and "error" in body
    status, body, _ = c.get("/health")
    assert status == 200 and body["status"] == "ok"
    assert body["snapshot"]["customers"] == 2  # consenting customers only


def test_waits_for_first_snapshot_then_serves_it(env: Settings, server: int) -> None:
    c = Client(server)
    status, body, _ = c.get("/health")
    assert status == 503 and body["status"] == "no_snapshot"
    assert c.get("/v1/decisions?customer_id=v1&slot=home_hero")[0] == 503
    write_inputs(env, PEOPLE, anonymous_ids=ANONYMOUS)
    publish(env)

    def serving() -> bool:
        status, body, _ = c.get("/v1/decisions?customer_id=v1&slot=home_hero")
        return status == 200 and body["rule_id"] == "vip"

    wait_for(serving)


def test_publish_during_load_no_error_no_mixed_answer(env: Settings, server: int) -> None:
    """Two rule sets alternate under load; every answer is wholly one of them."""
    write_inputs(env, PEOPLE, anonymous_ids=ANONYMOUS)
    variants = {
        "A": RULES,
        "B": RULES.replace("id: vip\n", "id: vip_b\n").replace("content: hero_vip\n",
                                                             "content: hero_vip_b\n")
                  .replace("default_content: hero_generic", "default_content: hero_generic_b"),
    }
    expected = {  # (v1 answer, plain answer) per rule set
        "A": (("hero_vip", "vip"), ("hero_generic", None)),
        "B": (("hero_vip_b", "vip_b"), ("hero_generic_b", None)),
    }
    env.content_rules.write_text(variants["A"])
    publish(env)
    c = Client(server)
    wait_for(lambda: c.get("/v1/decisions?customer_id=v1&slot=home_hero")[0] == 200)

    errors: list[str] = []
    seen: dict[str, set] = {}  # X-Snapshot -> distinct (v1, plain) answer pairs
    stop = threading.Event()
    counts = [0]

    def load() -> None:
        client = Client(server)
        while not stop.is_set():
            try:
                s1, b1, snap1 = client.get("/v1/decisions?customer_id=v1&slot=home_hero")
                s2, b2, snap2 = client.get("/v1/decisions?anonymous_id=anon-v1&slot=home_hero")
                s3, b3, snap3 = client.get("/v1/decisions?customer_id=plain&slot=home_hero")
            except Exception as exc:  # any transport error fails the test
                errors.append(repr(exc))
                return
            if {s1, s2, s3} != {200}:
                errors.append(f"status {s1} {s2} {s3}")
                continue
            for body, snap in ((b1, snap1), (b2, snap2)):
                answer = (body["content_id"], body["rule_id"])
                if answer not in {expected["A"][0], expected["B"][0]}:
                    errors.append(f"mixed answer {body}")
                seen.setdefault(snap, set()).add(("v1", answer))
            plain = (b3["content_id"], b3["rule_id"])
            if plain not in {expected["A"][1], expected["B"][1]}:
                errors.append(f"mixed answer {b3}")
            seen.setdefault(snap3, set()).add(("plain", plain))
            counts[0] += 3

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for name in ("B", "A", "B"):
            env.content_rules.write_text(variants[name])
            publish(env)
            time.sleep(1.2)  # > the API's reload check interval, so each one is served
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    assert counts[0] > 100
    assert len(seen) >= 3  # several snapshots were served during the load
    for snap, answers in seen.items():
        # Within one snapshot, each visitor got exactly one answer, all from one rule set.
        by_who = {who for who, _ in answers}
        assert len(answers) == len(by_who), (snap, answers)
        sets = {name for name, (v1, plain) in expected.items()
                for who, a in answers if a == (v1 if who == "v1" else plain)}
        assert len(sets) == 1, (snap, answers)
    # The last publish (B) is what the API serves now. (A fresh connection:
    # uvicorn closes keep-alive connections idle for more than 5 s.)
    final = Client(server).get("/v1/decisions?customer_id=v1&slot=home_hero")[1]
    assert final["content_id"] == "hero_vip_b"


def test_fast_path_and_fastapi_route_agree(published: Settings) -> None:
    from fastapi.testclient import TestClient

    from segment_warehouse.api import create_app

    fast, plain = TestClient(create_app(published)), TestClient(create_app(published,
                                                                           fast_path=False))
    for query in ("customer_id=v1&slot=home_hero", "anonymous_id=anon-v1&slot=email_banner",
                  "customer_id=nobody&slot=home_hero", "customer_id=v1&slot=nope",
                  "customer_id=v1", "slot=home_hero", "customer_id=v%31&slot=home_hero"):
        a, b = fast.get(f"/v1/decisions?{query}"), plain.get(f"/v1/decisions?{query}")
        assert (a.status_code, a.json()) == (b.status_code, b.json()), query
        assert a.headers.get("x-snapshot") == b.headers.get("x-snapshot")
    assert fast.get("/v1/decisions?customer_id=v%31&slot=home_hero").json()["rule_id"] == "vip"


def test_index_lookup_is_exact() -> None:
    import numpy as np

    from segment_warehouse.api.app import _as_bytes, _find

    keys = np.sort(_as_bytes(np.array(["ab", "a", "é-1", "cus_1"], dtype=object)))
    for key in ("ab", "a", "é-1", "cus_1"):
        assert keys[_find(keys, key)].decode() == key
    for key in ("abc", "", "a\x00", "cus_", "é", "x" * 100):
        assert _find(keys, key) == -1
    assert _find(np.array([], dtype="S1"), "a") == -1
