"""Writes modelyard/data/sample_jobs.jsonl (1,200 mixed work items and a few malformed lines) and
modelyard/data/eval_cases.jsonl (300 labelled cases). Deterministic."""

from __future__ import annotations

import json
import random
from pathlib import Path

TICKETS = {
    "billing": ["I was charged twice for my subscription this month", "Please refund the duplicate invoice #{n}",
                "My card was declined but the money left my account", "Why did my plan price go up?"],
    "bug": ["The export button crashes the app on Android {n}", "Search returns nothing since the last update",
            "I get error 500 when uploading a file of {n} MB", "The dashboard stays blank in Firefox"],
    "feature_request": ["Could you add dark mode to the mobile app?", "Please support SSO with Okta",
                        "It would be great to export reports as PDF", "Add a bulk edit option for {n} items"],
    "account": ["I cannot reset my password", "How do I add a teammate to my workspace?",
                "Please delete my account and data", "My login link expired after {n} minutes"],
}
REVIEWS = {"positive": ["Great product, works perfectly", "Fast delivery and lovely quality"],
           "negative": ["Broke after {n} days, very disappointed", "Terrible support, never again"],
           "neutral": ["It does the job", "Arrived on time, nothing special"]}
ORDER_SCHEMA = {"type": "object", "properties": {"order_id": {"type": "integer"}, "customer": {"type": "string"},
                "total": {"type": "number"}}, "required": ["order_id", "customer", "total"]}
ARTICLES = ["Kafka partitions let consumers in one group share the work of a topic; each partition is read by one "
            "member at a time, and offsets record progress so a restarted consumer resumes where it left off.",
            "Small language models fine-tuned on one task often match frontier models on it at a fraction of the "
            "cost, while large models remain better at novel, open-ended requests."]
TENANTS = ["acme", "globex", "initech"]


def job(n: int, rng: random.Random) -> dict:
    kind = rng.choices(["ticket", "review", "extract", "summary", "generate", "chat"], [45, 20, 12, 10, 8, 5])[0]
    base = {"job_id": f"job-{n:05d}", "tenant": rng.choice(TENANTS), "priority": rng.randint(0, 9)}
    if kind == "ticket":
        label = rng.choice(list(TICKETS))
        text = rng.choice(TICKETS[label]).format(n=n)
        hint = {"task": "classification"} if rng.random() < 0.7 else {}
        return base | hint | {"input": text, "params": {"labels": list(TICKETS)}, "metadata": {"expected": label}}
    if kind == "review":
        label = rng.choice(list(REVIEWS))
        return base | {"task": "classification", "input": rng.choice(REVIEWS[label]).format(n=n),
                       "params": {"labels": list(REVIEWS)}, "metadata": {"expected": label}}
    if kind == "extract":
        text = f"Order {1000 + n} placed by {rng.choice(['Ada', 'Linus', 'Grace'])} for ${rng.randint(5, 500)}.{rng.randint(0, 99):02d}"
        return base | {"task": "extraction", "input": text, "params": {"json_schema": ORDER_SCHEMA}}
    if kind == "summary":
        return base | {"task": "summarisation", "input": rng.choice(ARTICLES), "params": {"max_output_tokens": 60}}
    if kind == "generate":
        return base | {"task": "generation", "input": f"Write a two-line product blurb for gadget #{n}",
                       "params": {"max_output_tokens": 80}}
    return base | {"input": [{"role": "system", "content": "You are a concise assistant."},
                             {"role": "user", "content": f"Suggest a name for project {n}."}]}


MALFORMED = [
    '{"job_id": "bad-1", "tenant": "acme"}',
    '{"job_id": "bad-2", "tenant": "acme", "input": "hi", "priority": 42}',
    '{"job_id": "bad-3", "tenant": "acme", "input": "hi", "task": "classification"}',
    'this line is not JSON',
    '{"job_id": "bad-5", "tenant": "acme", "input": "hi", "schema_version": 2}',
    '{"job_id": "bad 6", "tenant": "acme", "input": "hi"}',
]


def main() -> None:
    rng = random.Random(20261124)
    lines = [json.dumps(job(n, rng)) for n in range(1, 1201)]
    for i, bad in enumerate(MALFORMED):
        lines.insert(150 * (i + 1), bad)
    out = Path(__file__).resolve().parent.parent / "modelyard" / "data" / "sample_jobs.jsonl"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {len(lines)} lines to {out}")
    cases = out.with_name("eval_cases.jsonl")
    cases.write_text("\n".join(eval_cases()) + "\n")
    print(f"wrote {cases}")


def eval_cases(n: int = 300) -> list[str]:
    """Labelled cases for `modelyard eval`: tickets and reviews with their true label, orders with their fields."""
    rng = random.Random(7)
    cases = []
    for i in range(n):
        kind = rng.choice(["ticket", "review", "order"])
        if kind == "ticket":
            label = rng.choice(list(TICKETS))
            item = {"job_id": f"case-{i:04d}", "tenant": "acme", "task": "classification",
                    "input": rng.choice(TICKETS[label]).format(n=i), "params": {"labels": list(TICKETS)}}
            cases.append(json.dumps({"item": item, "expected": label}))
        elif kind == "review":
            label = rng.choice(list(REVIEWS))
            item = {"job_id": f"case-{i:04d}", "tenant": "acme", "task": "classification",
                    "input": rng.choice(REVIEWS[label]).format(n=i), "params": {"labels": list(REVIEWS)}}
            cases.append(json.dumps({"item": item, "expected": label}))
        else:
            who, total = rng.choice(["Ada", "Linus", "Grace"]), rng.randint(5, 500)
            item = {"job_id": f"case-{i:04d}", "tenant": "acme", "task": "extraction",
                    "input": f"Order {1000 + i} placed by {who} for ${total}", "params": {"json_schema": ORDER_SCHEMA}}
            cases.append(json.dumps({"item": item, "expected": {"order_id": 1000 + i, "customer": who, "total": total}}))
    return cases


if __name__ == "__main__":
    main()
