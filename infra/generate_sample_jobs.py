"""Writes modelyard/data/sample_jobs.jsonl (1,200 mixed work items and a few malformed lines),
modelyard/data/eval_cases.jsonl (300 labelled cases) and modelyard/data/distill_jobs.jsonl (3,000 varied
support tickets and reviews for the distillation loop). Deterministic."""

from __future__ import annotations

import json
import random
from pathlib import Path

TICKETS = {
    "billing": [
        "I was charged twice for my subscription this month",
        "Please refund the duplicate invoice #{n}",
        "My card was declined but the money left my account",
        "Why did my plan price go up?",
    ],
    "bug": [
        "The export button crashes the app on Android {n}",
        "Search returns nothing since the last update",
        "I get error 500 when uploading a file of {n} MB",
        "The dashboard stays blank in Firefox",
    ],
    "feature_request": [
        "Could you add dark mode to the mobile app?",
        "Please support SSO with Okta",
        "It would be great to export reports as PDF",
        "Add a bulk edit option for {n} items",
    ],
    "account": [
        "I cannot reset my password",
        "How do I add a teammate to my workspace?",
        "Please delete my account and data",
        "My login link expired after {n} minutes",
    ],
}
REVIEWS = {
    "positive": ["Great product, works perfectly", "Fast delivery and lovely quality"],
    "negative": ["Broke after {n} days, very disappointed", "Terrible support, never again"],
    "neutral": ["It does the job", "Arrived on time, nothing special"],
}
ORDER_SCHEMA = {
    "type": "object",
    "properties": {
        "order_id": {"type": "integer"},
        "customer": {"type": "string"},
        "total": {"type": "number"},
    },
    "required": ["order_id", "customer", "total"],
}
ARTICLES = [
    "Kafka partitions let consumers in one group share the work of a topic; each partition is read by one "
    "member at a time, and offsets record progress so a restarted consumer resumes where it left off.",
    "Small language models fine-tuned on one task often match frontier models on it at a fraction of the "
    "cost, while large models remain better at novel, open-ended requests.",
]
TENANTS = ["acme", "globex", "initech"]


def job(n: int, rng: random.Random) -> dict:
    kind = rng.choices(
        ["ticket", "review", "extract", "summary", "generate", "chat"], [45, 20, 12, 10, 8, 5]
    )[0]
    base = {"job_id": f"job-{n:05d}", "tenant": rng.choice(TENANTS), "priority": rng.randint(0, 9)}
    if kind == "ticket":
        label = rng.choice(list(TICKETS))
        text = rng.choice(TICKETS[label]).format(n=n)
        hint = {"task": "classification"} if rng.random() < 0.7 else {}
        return (
            base
            | hint
            | {"input": text, "params": {"labels": list(TICKETS)}, "metadata": {"expected": label}}
        )
    if kind == "review":
        label = rng.choice(list(REVIEWS))
        return base | {
            "task": "classification",
            "input": rng.choice(REVIEWS[label]).format(n=n),
            "params": {"labels": list(REVIEWS)},
            "metadata": {"expected": label},
        }
    if kind == "extract":
        text = f"Order {1000 + n} placed by {rng.choice(['Ada', 'Linus', 'Grace'])} for ${rng.randint(5, 500)}.{rng.randint(0, 99):02d}"
        return base | {"task": "extraction", "input": text, "params": {"json_schema": ORDER_SCHEMA}}
    if kind == "summary":
        return base | {
            "task": "summarisation",
            "input": rng.choice(ARTICLES),
            "params": {"max_output_tokens": 60},
        }
    if kind == "generate":
        return base | {
            "task": "generation",
            "input": f"Write a two-line product blurb for gadget #{n}",
            "params": {"max_output_tokens": 80},
        }
    return base | {
        "input": [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": f"Suggest a name for project {n}."},
        ]
    }


MALFORMED = [
    '{"job_id": "bad-1", "tenant": "acme"}',
    '{"job_id": "bad-2", "tenant": "acme", "input": "hi", "priority": 42}',
    '{"job_id": "bad-3", "tenant": "acme", "input": "hi", "task": "classification"}',
    "this line is not JSON",
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
    distill = out.with_name("distill_jobs.jsonl")
    distill.write_text("\n".join(distill_jobs()) + "\n")
    print(f"wrote {distill}")


def eval_cases(n: int = 300) -> list[str]:
    """Labelled cases for `modelyard eval`: tickets and reviews with their true label, orders with their fields."""
    rng = random.Random(7)
    cases = []
    for i in range(n):
        kind = rng.choice(["ticket", "review", "order"])
        if kind == "ticket":
            label = rng.choice(list(TICKETS))
            item = {
                "job_id": f"case-{i:04d}",
                "tenant": "acme",
                "task": "classification",
                "input": rng.choice(TICKETS[label]).format(n=i),
                "params": {"labels": list(TICKETS)},
            }
            cases.append(json.dumps({"item": item, "expected": label}))
        elif kind == "review":
            label = rng.choice(list(REVIEWS))
            item = {
                "job_id": f"case-{i:04d}",
                "tenant": "acme",
                "task": "classification",
                "input": rng.choice(REVIEWS[label]).format(n=i),
                "params": {"labels": list(REVIEWS)},
            }
            cases.append(json.dumps({"item": item, "expected": label}))
        else:
            who, total = rng.choice(["Ada", "Linus", "Grace"]), rng.randint(5, 500)
            item = {
                "job_id": f"case-{i:04d}",
                "tenant": "acme",
                "task": "extraction",
                "input": f"Order {1000 + i} placed by {who} for ${total}",
                "params": {"json_schema": ORDER_SCHEMA},
            }
            cases.append(
                json.dumps(
                    {"item": item, "expected": {"order_id": 1000 + i, "customer": who, "total": total}}
                )
            )
    return cases


ISSUES = {
    "billing": [
        "I was charged twice this month",
        "the invoice shows the wrong amount",
        "my card was declined at renewal",
        "please refund the last payment",
        "the plan price went up without notice",
        "I need a receipt with VAT",
        "the discount code was not applied to my bill",
        "you billed the old subscription after I cancelled",
        "money left my account but the payment failed",
        "the tax on invoice {n} is wrong",
    ],
    "bug": [
        "the app crashes when I open settings",
        "I get an error when uploading a file",
        "the dashboard stays blank",
        "search is broken since the update",
        "the page freezes on save",
        "exports fail with a timeout",
        "the mobile app is stuck on the loading screen",
        "charts show the wrong numbers",
        "images are missing from reports",
        "sync failed with error {n}",
    ],
    "feature_request": [
        "could you add dark mode",
        "I would love an integration with Slack",
        "please allow bulk edits",
        "a calendar view would be a great feature",
        "add an option to export as PDF",
        "is keyboard support on the roadmap",
        "my idea: let us pin favourite projects",
        "we wish there were custom fields",
        "support for webhooks would be great",
        "could you add a weekly digest",
    ],
    "account": [
        "I cannot reset my password",
        "how do I invite a teammate to the workspace",
        "please delete my account",
        "my login link does not arrive by email",
        "I am locked out of my profile",
        "how do I change my username",
        "I lost access after changing my email",
        "remove a former teammate from our workspace",
        "sign in keeps asking for my password",
        "transfer the account owner role",
    ],
}
OPENERS = ["", "", "Hi,", "Hello team,", "Urgent:", "Quick question:", "Good morning,", "Hey support,"]
CONTEXTS = [
    "",
    "",
    "on the iOS app",
    "in the web version",
    "since Tuesday",
    "for order {n}",
    "on our team plan",
    "again today",
    "for the third time",
]
CLOSERS = [
    "",
    "",
    "Thanks.",
    "Please help.",
    "Any news?",
    "Regards, {name}",
    "Cheers, {name}",
    "This is blocking us.",
]
REVIEW_PARTS = {
    "positive": [
        "great product",
        "works perfectly",
        "lovely quality",
        "fast delivery",
        "I love it",
        "would recommend",
    ],
    "negative": [
        "broke after a week",
        "terrible support",
        "very disappointed",
        "never again",
        "awful packaging",
        "poor quality",
    ],
    "neutral": [
        "it does the job",
        "arrived on time",
        "nothing special",
        "average build",
        "fine for the price",
        "as expected",
    ],
}
NAMES = ["Ada", "Linus", "Grace", "Alan", "Barbara", "Ken", "Margaret"]


def distill_jobs(n: int = 3000) -> list[str]:
    """Support tickets (80%, sometimes mixing two issues) and product reviews, built from parts so they vary."""
    rng, jobs = random.Random(31), []
    for i in range(n):
        if rng.random() < 0.8:
            label = rng.choice(list(ISSUES))
            parts = [rng.choice(OPENERS), rng.choice(ISSUES[label]), rng.choice(CONTEXTS)]
            if rng.random() < 0.12:  # a second, different issue: the teacher decides which one wins
                parts.append("and " + rng.choice(ISSUES[rng.choice([k for k in ISSUES if k != label])]))
            parts.append(rng.choice(CLOSERS))
            labels = list(ISSUES)
        else:
            label = rng.choice(list(REVIEW_PARTS))
            parts = [
                ", ".join(rng.sample(REVIEW_PARTS[label], 2)),
                rng.choice(["", "", "- " + rng.choice(NAMES)]),
            ]
            labels = list(REVIEW_PARTS)
        text = " ".join(p for p in parts if p).format(n=rng.randint(100, 99999), name=rng.choice(NAMES))
        jobs.append(
            json.dumps(
                {
                    "job_id": f"d-{i:05d}",
                    "tenant": rng.choice(TENANTS),
                    "task": "classification",
                    "priority": rng.randint(0, 8),
                    "input": text[0].upper() + text[1:],
                    "params": {"labels": labels},
                    "metadata": {"intended": label},
                }
            )
        )
    return jobs


if __name__ == "__main__":
    main()
