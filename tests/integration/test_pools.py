"""Pool workers in-process against real Kafka, calling the simulator through the real SDKs: 429 storms,
outages with fallbacks, the circuit breaker opening and closing, the confidence cascade."""

from __future__ import annotations

import asyncio
import time

import pytest

from modelyard.core.settings import Settings, load_settings
from schemas import ResultStatus
from tests.helpers import Pipeline, assert_one_final_each, assignment, running_simulator
from workers.pools.breaker import BreakerState

pytestmark = pytest.mark.integration


def test_429_storm_slows_the_pool_but_fails_nothing(pipeline_settings: Settings) -> None:
    settings = load_settings(providers={"vllm": {"max_retries": 1}}, simulator={"retry_after_s": 0.1})

    async def scenario() -> None:
        async with running_simulator(settings) as sim, Pipeline(settings, ["slm"]) as pipeline:
            await pipeline.run([assignment(f"warm-{n}", "slm") for n in range(5)])  # the pool is up
            sim.faults.update({"storm_429_s": 1.5})
            started = time.monotonic()
            by_job = await pipeline.run([assignment(f"storm-{n}", "slm") for n in range(60)])
            assert time.monotonic() - started >= 1.4  # nothing got through the storm: it waited it out
            assert_one_final_each(by_job, lambda r: r.status is ResultStatus.OK)
            assert {len(a) for a in by_job.values()} == {1}  # waiting out 429s is not a new attempt
            assert (
                sim.stats["openai.429"] >= 60
                and pipeline.workers["slm"].dispatcher.targets[0].gate.rate_limited > 0
            )

    asyncio.run(scenario())


def test_outage_fails_over_and_the_breaker_opens_then_closes(pipeline_settings: Settings) -> None:
    settings = load_settings(
        pools={"frontier": {"concurrency": 4, "fallbacks": ["openai:gpt-5-mini"]}},
        providers={"anthropic": {"max_retries": 0, "breaker_failures": 3, "breaker_cooldown_s": 1.0}},
    )

    async def scenario() -> None:
        async with (
            running_simulator(settings, fault_model="claude-sonnet-5") as sim,
            Pipeline(settings, ["frontier"]) as pipeline,
        ):
            primary = pipeline.workers["frontier"].dispatcher.targets[0]
            await pipeline.run([assignment(f"warm-{n}", "frontier") for n in range(4)])
            sim.faults.update({"outage_s": 60})
            by_job = await pipeline.run([assignment(f"out-{n}", "frontier") for n in range(30)])
            assert_one_final_each(by_job, lambda r: r.status is ResultStatus.OK and r.provider == "openai")
            failed = [a[0] for a in by_job.values() if len(a) == 2]
            assert all(
                r.status is ResultStatus.FAILED_OVER and r.provider == "anthropic" and "503" in r.error
                for r in failed
            )
            assert 3 <= len(failed) < 15, len(failed)  # the open circuit spared the rest a doomed call
            assert primary.breaker.times_opened >= 1 and primary.breaker.state is not BreakerState.CLOSED

            sim.faults.update({"outage_s": 0})
            await asyncio.sleep(primary.breaker.seconds_until_probe() + 0.05)
            probe = await pipeline.run([assignment("probe", "frontier")])
            assert probe["probe"][-1].provider == "anthropic" and primary.breaker.state is BreakerState.CLOSED
            after = await pipeline.run([assignment(f"after-{n}", "frontier") for n in range(10)])
            assert_one_final_each(after, lambda r: r.status is ResultStatus.OK and r.provider == "anthropic")

    asyncio.run(scenario())


def test_an_outage_from_the_first_second_with_no_fallback_fails_no_job(pipeline_settings: Settings) -> None:
    """The outage is already on when the first calls go out (no circuit open yet): those calls fail after the
    SDK's retries, their jobs wait for the circuit's probe and are answered once the provider is back. Every
    call made has its own Result (so the sink bills it), and no job ends as error."""
    settings = load_settings(
        pools={"frontier": {"concurrency": 8, "wait_for_circuit_s": 30}},
        providers={"anthropic": {"max_retries": 1, "breaker_failures": 3, "breaker_cooldown_s": 0.5}},
    )

    async def scenario() -> None:
        async with running_simulator(settings) as sim, Pipeline(settings, ["frontier"]) as pipeline:
            await pipeline.run([assignment("warm", "frontier")])  # the pool is consuming, circuits closed
            sim.faults.update({"outage_s": 5})
            sim.stats.clear()
            by_job = await pipeline.run([assignment(f"o-{n}", "frontier") for n in range(40)], timeout=60)
            by_job.pop("warm", None)
            assert_one_final_each(by_job, lambda r: r.status is ResultStatus.OK)
            failed = [r for attempts in by_job.values() for r in attempts[:-1]]
            assert failed and all(r.status is ResultStatus.FAILED_OVER and "503" in r.error for r in failed)
            # one OK Result per answered call; each failed Result is a call whose requests all got 503s (a call
            # whose SDK retry landed after the outage got a 503 and then its 200, with no failed Result)
            assert sim.stats["anthropic.200"] == 40
            assert sim.stats["anthropic.503"] >= len(failed)

    asyncio.run(scenario())


def test_all_circuits_open_ends_the_job_with_an_error_and_no_call(pipeline_settings: Settings) -> None:
    settings = load_settings(
        pools={"frontier": {"concurrency": 1, "fallbacks": ["openai:gpt-5-mini"], "wait_for_circuit_s": 0}},
        providers={
            name: {"max_retries": 0, "breaker_failures": 1, "breaker_cooldown_s": 60}
            for name in ("anthropic", "openai")
        },
    )

    async def scenario() -> None:
        async with (
            running_simulator(settings, outage_s=60) as sim,
            Pipeline(settings, ["frontier"]) as pipeline,
        ):
            by_job = await pipeline.run([assignment(f"down-{n}", "frontier") for n in range(3)])
            assert_one_final_each(by_job, lambda r: r.status is ResultStatus.ERROR)
            tried = [a for a in by_job.values() if len(a) == 2]  # the first job opened both circuits
            assert len(tried) == 1 and [r.provider for r in tried[0]] == ["anthropic", "openai"]
            for (only,) in [a for a in by_job.values() if len(a) == 1]:
                assert "circuit open for anthropic/claude-sonnet-5, openai/gpt-5-mini" in only.error
                assert only.usage.input_tokens == 0
            assert sim.stats["anthropic.503"] == 1 and sim.stats["openai.503"] == 1

    asyncio.run(scenario())


def test_cascade_escalates_exactly_the_low_confidence_items(pipeline_settings: Settings) -> None:
    cascade = {
        "to_pool": "frontier",
        "min_confidence": {"classification": 0.3},
    }  # the simulator's floor is 0.35
    settings = load_settings(pools={"slm": {"cascade": cascade}})
    marked = {f"c-{n}" for n in range(0, 30, 3)}

    async def scenario() -> None:
        async with (
            running_simulator(settings, low_confidence_marker="[unsure]") as sim,
            Pipeline(settings, ["slm", "frontier"]) as pipeline,
        ):
            jobs = [
                assignment(f"c-{n}", "slm", "[unsure] hmm" if f"c-{n}" in marked else "charged twice")
                for n in range(30)
            ]
            by_job = await pipeline.run(jobs)
            assert_one_final_each(by_job, lambda r: r.status is ResultStatus.OK)
            escalated = {job for job, attempts in by_job.items() if len(attempts) > 1}
            assert escalated == marked
            for job in marked:
                first, final = by_job[job]
                assert (first.pool, first.status, first.confidence) == (
                    "slm",
                    ResultStatus.ESCALATED,
                    pytest.approx(0.05),
                )
                assert (final.pool, final.provider, final.attempt) == ("frontier", "anthropic", 2)
                assert first.usage.input_tokens > 0  # the SLM call stays billed
            assert all(by_job[job][0].pool == "slm" for job in set(by_job) - marked)
            assert sim.stats["anthropic.200"] == len(marked)

    asyncio.run(scenario())


def test_requests_per_minute_are_shared_by_every_call_in_flight(pipeline_settings: Settings) -> None:
    settings = load_settings(providers={"vllm": {"rpm": 120}})  # a 10 s bucket: 20 at once, then 2 a second

    async def scenario() -> None:
        async with running_simulator(settings) as sim, Pipeline(settings, ["slm"]) as pipeline:
            by_job = await pipeline.run([assignment(f"rpm-{n}", "slm") for n in range(24)])
            assert_one_final_each(by_job, lambda r: r.status is ResultStatus.OK)
            done = sorted(a[0].completed_at for a in by_job.values())
            assert (done[19] - done[0]).total_seconds() < 1.0  # the burst went out together
            assert (done[-1] - done[0]).total_seconds() >= 1.5  # the last 4 waited for the bucket to drain
            assert sim.stats["openai.200"] == 24

    asyncio.run(scenario())


def test_stopping_during_a_429_storm_leaves_waiting_jobs_for_the_replay(pipeline_settings: Settings) -> None:
    settings = load_settings(
        providers={"vllm": {"max_retries": 0, "rate_limit_retries": 6}}, simulator={"retry_after_s": 20}
    )
    jobs = [assignment(f"held-{n}", "slm") for n in range(10)]

    async def scenario() -> None:
        async with running_simulator(settings, storm_429_s=60) as sim:
            async with Pipeline(settings, ["slm"]) as first:
                await first.submit(jobs)
                gate = first.workers["slm"].dispatcher.targets[0].gate
                while gate.rate_limited < 10:  # every job is waiting out a 20 s pause
                    await asyncio.sleep(0.05)
                stopping_at = time.monotonic()
            assert time.monotonic() - stopping_at < 5  # did not wait out the pause
            assert first.workers["slm"].abandoned == 10 and first.workers["slm"].processed == 0
            sim.faults.update({"storm_429_s": 0})
            async with Pipeline(settings, ["slm"]) as second:
                by_job = await second.finals({a.item.job_id for a in jobs})
            assert_one_final_each(by_job, lambda r: r.status is ResultStatus.OK)
            assert {len(a) for a in by_job.values()} == {1}

    asyncio.run(scenario())
