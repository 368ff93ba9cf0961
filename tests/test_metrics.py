"""Metrics across processes: two real gateways sharing one multiprocess directory."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sessiongate import metrics

from .fakes.openai_server import FakeOpenAI
from .gateway_process import gateway_env, serve_process

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_two_processes_sharing_a_multiprocess_dir_report_the_same_summed_counts(
    tmp_path: Path, fake_openai_server: tuple[FakeOpenAI, str], fake_openai: FakeOpenAI
) -> None:
    shared = tmp_path / "metrics"
    env = gateway_env(
        f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}",
        fake_openai_server[1],
        PROMETHEUS_MULTIPROC_DIR=str(shared),
    )
    with (
        serve_process(env, tmp_path, name="one") as one,
        serve_process(env, tmp_path, name="two") as two,
    ):
        assert one.process.pid != two.process.pid
        for url, turns in ((one.url, 3), (two.url, 2)):
            with httpx.Client(base_url=url) as client:
                for i in range(turns):
                    assert client.post("/api/chat", json={"message": f"m{i}"}).is_success
                refused = client.post("/api/chat", json={"message": ""})
                assert refused.json()["error"]["code"] == "empty_message"
        seen_by_one, seen_by_two = scrape(one.url), scrape(two.url)

    for samples in (seen_by_one, seen_by_two):
        chats = value(
            samples,
            "sessiongate_http_requests_total",
            method="POST",
            route="/api/chat",
            status="200",
        )
        assert chats == 5  # 3 served by one process, 2 by the other
        assert value(samples, "sessiongate_refused_requests_total", code="empty_message") == 2
        assert value(samples, "sessiongate_turns_total", provider="openai", outcome="complete") == 5
        assert value(samples, "sessiongate_turn_duration_seconds_count", provider="openai") == 5
        assert (
            value(samples, "sessiongate_time_to_first_token_seconds_count", provider="openai") == 5
        )
        assert value(samples, "sessiongate_replies_in_progress") == 0
        # Read from the shared database, not summed per process: 5 + 2 = 7 would be wrong.
        assert value(samples, "sessiongate_sessions_active") == 2
    assert {p.name.rsplit("_", 1)[-1] for p in shared.glob("counter_*.db")} == {
        f"{one.process.pid}.db",
        f"{two.process.pid}.db",
    }


def test_prepare_multiprocess_gives_workers_an_empty_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(metrics.MULTIPROC_ENV, raising=False)
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_12345.db").write_bytes(b"stale counts of an earlier run")
    (directory / "keep.txt").write_text("not ours")

    assert metrics.prepare_multiprocess(directory) == directory
    assert os.environ[metrics.MULTIPROC_ENV] == str(directory)
    assert sorted(p.name for p in directory.iterdir()) == ["keep.txt"]

    made = metrics.prepare_multiprocess(None)
    try:
        assert made.is_dir() and list(made.iterdir()) == []
        assert os.environ[metrics.MULTIPROC_ENV] == str(made)
    finally:
        metrics.cleanup_multiprocess(made)
    assert not made.exists()
