"""Settings sections for the pipeline's stages: pools (batching, cascades, fallbacks, scheduling, result cache),
the router (cache policy), budgets and costs, the sink (shadow alerts) and distillation."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, model_validator

from modelyard.core.settings_services import ENCODER_DIR, Section
from schemas import TaskType


class FallbackTarget(Section):
    """Another provider and model a pool may call when its own is in trouble."""

    provider: str
    model: str

    @model_validator(mode="before")
    @classmethod
    def _from_shorthand(cls, data: Any) -> Any:
        """'provider:model' is shorthand for {provider, model}."""
        if isinstance(data, str):
            provider, _, model = data.partition(":")
            if not model:
                raise ValueError(f"fallback {data!r}: write 'provider:model' or {{provider, model}}")
            return {"provider": provider, "model": model}
        return data


class CascadeSettings(Section):
    """Send low-confidence answers on to a stronger pool (the first answer stays, billed, marked 'escalated')."""

    to_pool: str
    min_confidence: dict[TaskType, Annotated[float, Field(ge=0, le=1)]] = Field(
        default_factory=dict, description="Per task type: answers below this confidence are escalated."
    )


class BatchSettings(Section):
    """A pool's use of its provider's batch API (OpenAI Batch, Anthropic Message Batches: 50% off, within 24 h)."""

    enabled: bool = False
    horizon_s: float = Field(
        default=26 * 3600,
        ge=0,
        description="Items with no deadline, or one farther away than this, are deferrable.",
    )
    max_items: int = Field(
        default=1000, ge=1, le=50_000, description="A batch is sent once it holds this many items..."
    )
    max_wait_s: float = Field(
        default=60.0, gt=0, description="...or once its first item has waited this long."
    )
    max_pending: int = Field(
        default=10_000, ge=1, description="Items waiting in batches; past this the pool stops taking work."
    )
    poll_interval_s: float = Field(
        default=30.0, gt=0, description="First wait before polling a batch; doubles each poll..."
    )
    poll_max_interval_s: float = Field(default=300.0, gt=0, description="...up to this.")


class PoolSettings(Section):
    provider: str
    model: str
    concurrency: int = Field(default=32, ge=1, le=4096)
    max_output_tokens: int = Field(default=256, ge=1)
    fallbacks: list[FallbackTarget] = Field(
        default_factory=list,
        description="Tried in order when the provider fails (outage, 5xx, open circuit).",
    )
    cascade: CascadeSettings | None = None
    wait_for_circuit_s: float = Field(
        default=120.0,
        ge=0,
        description="How long a job waits for a probe when every circuit of its chain is open.",
    )
    batch: BatchSettings = BatchSettings()
    commit_interval_s: float = Field(
        default=0.5, gt=0, description="How often finished assignments' offsets are committed."
    )


class CachePolicy(Section):
    """Which tenants' and tasks' items may be answered from the result cache (opt-in: nothing by default).

    In the routing policy file as `cache:` (every tenant) and `tenants.<name>.cache:` (replaces it for that
    tenant); without a policy file, `router.cache`."""

    tasks: list[TaskType] = Field(
        default_factory=list, description="Task types whose identical requests are answered from the cache."
    )
    ttl_s: float = Field(default=86_400.0, gt=0, description="Cached answers older than this are not used.")
    shareable: list[TaskType] = Field(
        default_factory=list,
        description="Of those, tasks whose answers are shared with every other tenant that shares them too; "
        "otherwise a tenant only ever receives its own tenant's cached answers.",
    )

    @model_validator(mode="after")
    def _shareable_are_cached(self) -> CachePolicy:
        stray = [t.value for t in self.shareable if t not in self.tasks]
        if stray:
            raise ValueError(f"shareable: {stray} not in tasks (only cached tasks can be shared)")
        return self


class RouterSettings(Section):
    policy_file: Path | None = Field(
        default=None, description="Routing-policy YAML; without it, `routes` is the policy."
    )
    reload_interval_s: float = Field(
        default=1.0, gt=0, description="How often the policy file's mtime is checked."
    )
    known_tenants: list[str] | None = Field(
        default=None, description="When set, other tenants are dead-lettered."
    )
    tenant_keys: dict[str, SecretStr] | None = Field(
        default=None,
        description="Per-tenant HMAC keys. When set, the router accepts only jobs signed with their tenant's key "
        "(header modelyard-signature); `submit` and dead-letter replay sign with the keys they hold.",
    )
    dedup_window_s: float = Field(default=600.0, ge=0)
    dedup_max_entries: int = Field(default=1_000_000, ge=0)
    job_ids_max_entries: int = Field(
        default=5_000_000, ge=1, description="Most routed job ids a router holds (the oldest go first)."
    )
    novelty_dims: int = Field(default=1024, ge=16)
    shadow_share: float = Field(
        default=0.0, ge=0, le=1, description="Share of SLM-bound items also sent to shadow_pool."
    )
    shadow_pool: str = "frontier"
    novelty_save_interval_s: float = Field(default=30.0, gt=0)
    engine: Literal["batch", "agent"] = Field(
        default="batch",
        description="batch: whole fetches routed by a task of the Faust app (fast); agent: a Faust agent per event.",
    )
    cache: CachePolicy = Field(
        default_factory=CachePolicy, description="Result-cache opt-in when no policy file is set."
    )
    batch_max: int = Field(
        default=5000,
        ge=1,
        description="Most records routed (and committed) as one batch; fewer broker round trips per record than 2000 (about 15% less wall time per record here), ~75 ms of routing each.",
    )


class SinkSettings(Section):
    batch_size: int = Field(default=2000, ge=1)
    flush_interval_s: float = Field(default=0.5, gt=0)
    retry_backoff_s: float = Field(default=1.0, gt=0)


class BudgetSettings(Section):
    daily_usd: Decimal | None = Field(default=None, ge=0)
    monthly_usd: Decimal | None = Field(default=None, ge=0)
    action: Literal["reject", "downgrade", "defer"] = Field(
        default="downgrade", description="What the router does with frontier-bound items once over budget."
    )


class CostSettings(Section):
    prices_dir: Path | None = Field(
        default=None, description="Directory of per-provider price YAML files; default bundled."
    )
    reference_model: str | None = Field(
        default="claude-sonnet-5", description="Frontier model savings are measured against."
    )
    budgets: dict[str, BudgetSettings] = Field(default_factory=dict, description="Per-tenant spend limits.")
    budget_pools: list[str] = Field(
        default_factory=lambda: ["frontier"], description="Pools whose spend budgets guard."
    )
    downgrade_pool: str = Field(default="slm", description="Where 'downgrade' sends over-budget items.")


class ResultCacheSettings(Section):
    """Each pool process's copy of the shared result cache (the compacted cache topic), bounded."""

    max_entries: int = Field(default=200_000, ge=1, description="Least recently used entries go first.")
    max_bytes: int = Field(default=256 * 1024 * 1024, ge=1024, description="Answers' bytes held, at most.")
    max_output_chars: int = Field(
        default=32_768, ge=1, description="Longer answers are not cached (they would crowd out the rest)."
    )
    restore_timeout_s: float = Field(
        default=60.0, gt=0, description="How long a starting pool reads the cache topic before taking work."
    )


class SchedulingSettings(Section):
    """How a pool orders the work it has read: priority first (9 before 0), then deadlines about to pass,
    then tenants by weighted fair share of recent use. See workers/pools/scheduling.py."""

    tenant_weights: dict[str, float] = Field(
        default_factory=dict, description="A tenant's share relative to others (default_weight if absent)."
    )
    default_weight: float = Field(default=1.0, gt=0)
    half_life_s: float = Field(
        default=10.0, gt=0, description="Past use counts half after this long (the fair-share memory)."
    )
    urgent_within_s: float = Field(
        default=30.0, ge=0, description="Items whose deadline is this close go first (nearest first)."
    )
    light_share: float = Field(
        default=0.9,
        gt=0,
        le=1,
        description="Share of the starts light tenants take while heavy ones (whose backlog overflows the "
        "read-ahead) wait too; 1: light tenants always first.",
    )
    read_ahead: int = Field(
        default=8192, ge=1, description="Items a pool holds read but not started, across all tenants."
    )
    flow_cap: int = Field(
        default=1024,
        ge=1,
        description="Of those, at most this many per tenant and priority; the rest of a "
        "tenant's backlog is skipped (its offsets kept) and read again when its queue runs low.",
    )
    scan_limit: int = Field(
        default=100_000,
        ge=1,
        description="How far past its oldest unfinished offset a partition is read "
        "looking for other tenants' work (8 bytes per skipped item).",
    )


class DistillSettings(Section):
    """Distillation (`modelyard distill`): frontier answers become training data for a CPU student model."""

    capture_tasks: list[TaskType] = Field(
        default_factory=lambda: [TaskType.CLASSIFICATION],
        description="Task types whose inputs the sink keeps (table job_inputs) as training data; [] keeps none.",
    )
    teacher_pools: list[str] = Field(
        default_factory=lambda: ["frontier"], description="Pools whose ok answers are labels."
    )
    models_dir: Path | None = Field(
        default=None, description="Model registry directory; default <state_dir>/models."
    )
    target: float = Field(
        default=0.95, gt=0, le=1, description="Held-out agreement a student needs to be registered."
    )
    holdout: float = Field(
        default=0.2, gt=0, lt=1, description="Share of distinct inputs held out for evaluation."
    )
    min_examples: int = Field(default=50, ge=2, description="Fewer labelled examples than this: no training.")
    student: Literal["auto", "ngram", "embedding"] = Field(
        default="auto",
        description="Student kind: hashed n-grams, sentence embeddings (needs `make encoder`), or auto: both "
        "are trained and the one serving the larger held-out share at the target is registered.",
    )
    encoder_dir: Path = Field(
        default=ENCODER_DIR, description="The ONNX sentence encoder embedding students use."
    )
    min_served_share: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="A student below the target overall is still registered when its calibrated cascade "
        "threshold serves at least this share of held-out items at the target; the rest escalate.",
    )
    target_reading: Literal["served", "end_to_end"] = Field(
        default="served",
        description="How the cascade threshold reads the target: `served`, the student's own answers are at "
        "it; `end_to_end`, the job's answers as a whole are (escalated ones being the teacher's), so fewer "
        "items escalate (modelyard/ops/selective_serving.py).",
    )
    pool: str = Field(
        default="slm", description="The pool serving students; the proposed policy routes there."
    )
    reload_interval_s: float = Field(
        default=5.0, gt=0, description="How often a pool checks the registry for a new version."
    )


class ShadowAlertSettings(Section):
    """The sink reads v_shadow_agreement and exports it as gauges; below `threshold` the alert gauge is 1."""

    threshold: float = Field(default=0.9, ge=0, le=1)
    min_pairs: int = Field(
        default=20, ge=1, description="Fewer shadow pairs than this: no verdict (gauge stays 0)."
    )
    window_days: int = Field(default=1, ge=1, description="Days of v_shadow_agreement pooled (1: today).")
    interval_s: float = Field(
        default=60.0, gt=0, description="How often the sink refreshes the gauges (0 pairs: free)."
    )
