"""Why an item was, or was not, scored for novelty, in one sentence (`modelyard route --explain`)."""

from __future__ import annotations

from pathlib import Path

from streams.decision import Decision
from streams.novelty import NoveltyDetector
from streams.rules import NoveltyPolicy


def explain_novelty(
    decision: Decision, policy: NoveltyPolicy, detector: NoveltyDetector, state_file: Path, loaded: bool
) -> str:
    task = decision.task_type.value
    if not policy.enabled:
        return "not scored: novelty checks are off in the routing policy (novelty.enabled: false)"
    if (
        decision.rule == "novelty"
        and decision.novelty_score is not None
        and "unknown task" in decision.reason
    ):
        return f"not scored: the task type is unknown ('{task}'), and such items never go to {policy.applies_to}: sent to {decision.pool}"
    if decision.rule == "novelty":
        return (
            f"{decision.novelty_score:.3f} >= threshold {policy.threshold}: unlike the {task} traffic the SLM has "
            f"seen ({_centroids(detector, task)}), so it goes to {decision.pool} instead"
        )
    if decision.pool not in policy.applies_to:
        return f"not scored: pool {decision.pool} is not one the check guards (novelty.applies_to: {policy.applies_to})"
    if decision.novelty_score is None:
        learned = detector.samples(task)
        where = (
            f"centroids loaded from {state_file}"
            if loaded
            else f"no centroids saved at {state_file} yet (the router saves them every "
            "router.novelty_save_interval_s and when it stops)"
        )
        return f"not scored yet: task {task} has {learned} of the {policy.min_samples} learned items a score needs; {where}"
    return (
        f"{decision.novelty_score:.3f} < threshold {policy.threshold}: familiar {task} work "
        f"({_centroids(detector, task)}), so it stays on {decision.pool}"
    )


def _centroids(detector: NoveltyDetector, task: str) -> str:
    centroids = detector.tasks.get(task)
    used = centroids.used if centroids is not None else 0
    return f"{used} centroids from {detector.samples(task):,} learned items"
