"""The local host runs Service Bus sessions as the Functions host's session processor does."""

from __future__ import annotations

import json
import threading
import time

import azure.functions as func
import pytest

from devtools.local_host import InMemoryBroker, LocalHost
from devtools.local_host import host as host_module
from devtools.local_host.host import ROOT, HostConfig, timespan


def app_with(work) -> func.FunctionApp:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.function_name("orders")
    @app.service_bus_queue_trigger(arg_name="message", queue_name="orders", connection="x", is_sessions_enabled=True)
    def orders(message: func.ServiceBusMessage) -> None:
        work(message)

    return app


class Recorder:
    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.started: dict[str, float] = {}
        self.running = 0
        self.most_at_once = 0
        self.lock = threading.Lock()

    def __call__(self, message: func.ServiceBusMessage) -> None:
        with self.lock:
            self.started[message.message_id] = time.monotonic()
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        time.sleep(self.seconds)
        with self.lock:
            self.running -= 1


def test_the_shipped_host_json_is_what_the_local_host_runs():
    shipped = json.loads((ROOT / "host.json").read_text())["extensions"]["serviceBus"]
    config = HostConfig.load(environ={})
    assert config.max_concurrent_sessions == shipped["maxConcurrentSessions"]
    assert config.session_idle_timeout_s == timespan(shipped["sessionIdleTimeout"])
    assert config.prefetch_count == shipped["prefetchCount"]
    assert HostConfig.load(environ={"PYTHON_THREADPOOL_THREAD_COUNT": "3"}).thread_count == 3


def test_timespans_as_host_json_writes_them():
    assert timespan("00:00:30") == 30
    assert timespan("00:00:00.80") == pytest.approx(0.8)
    assert timespan("1.02:00:00") == 93600
    with pytest.raises(ValueError):
        timespan("30s")


def test_a_held_session_waits_out_the_idle_timeout_before_its_slot_takes_another():
    recorder = Recorder()
    broker = InMemoryBroker()
    config = HostConfig(max_concurrent_sessions=2, session_idle_timeout_s=0.4, thread_count=4)
    host = LocalHost(app_with(recorder), broker, config=config)
    with host:
        began = time.monotonic()
        for n in range(4):
            broker.send("orders", b"{}", message_id=f"m{n}", session_id=f"P{n}")
        assert host.wait_idle(10)
    first, later = sorted(recorder.started.values())[:2], sorted(recorder.started.values())[2:]
    assert all(t - began < 0.3 for t in first)  # two slots: two sessions at once
    assert all(t - began >= 0.4 for t in later)  # the others wait until a held session idles out
    assert host.stats.sessions_released_idle >= 2


def test_a_message_within_the_idle_timeout_stays_in_the_held_session():
    recorder = Recorder()
    broker = InMemoryBroker()
    host = LocalHost(app_with(recorder), broker, config=HostConfig(max_concurrent_sessions=1, session_idle_timeout_s=5))
    with host:
        broker.send("orders", b"{}", message_id="a", session_id="P1")
        time.sleep(0.2)
        broker.send("orders", b"{}", message_id="b", session_id="P1")
        assert host.wait_idle(10)
    assert set(recorder.started) == {"a", "b"}
    assert host.stats.sessions_accepted == 1


def test_the_worker_thread_pool_bounds_invocations_across_sessions():
    recorder = Recorder(seconds=0.05)
    broker = InMemoryBroker()
    config = HostConfig(max_concurrent_sessions=8, session_idle_timeout_s=0.1, thread_count=2)
    host = LocalHost(app_with(recorder), broker, config=config)
    with host:
        for n in range(8):
            broker.send("orders", b"{}", message_id=f"m{n}", session_id=f"P{n}")
        assert host.wait_idle(10)
    assert len(recorder.started) == 8
    assert recorder.most_at_once == 2


def test_a_lock_outliving_its_duration_is_renewed_while_the_function_runs():
    recorder = Recorder(seconds=0.6)
    broker = InMemoryBroker()
    host = LocalHost(app_with(recorder), broker, config=HostConfig(session_idle_timeout_s=0.1), lock_duration_s=0.3)
    with host:
        broker.send("orders", b"{}", message_id="slow", session_id="P1")
        assert host.wait_idle(10)
    assert len(recorder.started) == 1  # delivered once: the lock did not expire mid-call
    assert host.stats.failures == 0 and broker.dead_letters("orders") == []


def test_prefetched_messages_whose_lock_ran_out_come_back_with_a_higher_delivery_count():
    counts: list[int] = []
    broker = InMemoryBroker()

    def slow_first(message: func.ServiceBusMessage) -> None:
        counts.append(message.delivery_count or 0)
        if len(counts) == 1:
            time.sleep(1.5)  # ample: the prefetcher fetches "b" even on a loaded machine

    config = HostConfig(max_concurrent_sessions=1, session_idle_timeout_s=1, prefetch_count=1)
    host = LocalHost(app_with(slow_first), broker, config=config, lock_duration_s=0.2)
    with host:
        broker.send("orders", b"{}", message_id="a", session_id="P1")
        broker.send("orders", b"{}", message_id="b", session_id="P1")
        assert host.wait_idle(10)
    assert counts == [1, 2]  # "b" was locked ahead, its lock ran out while "a" ran (renewed): delivered again


def test_an_app_that_reuses_a_collected_app_s_id_is_served_its_own_functions(monkeypatch):
    # CPython reuses an object's id once it is collected: the cache must not hand the new app the old one's functions.
    new_app = app_with(lambda message: None)
    old_app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
    monkeypatch.setitem(host_module._DISCOVERED, id(new_app), (old_app, host_module.Discovered((), {})))
    assert [f.queue for f in host_module.discover(new_app).queues] == ["orders"]
    assert host_module.discover(new_app) is host_module.discover(new_app)  # and cached from then on
