"""The request each backend builds: structured outputs per wire dialect (no network)."""

from modelyard.core.settings import load_settings
from schemas import TaskType, WorkItem
from workers.pools.backends.anthropic_messages import AnthropicBackend
from workers.pools.backends.openai_chat import OpenAIChatBackend

ITEM = WorkItem(
    job_id="j",
    tenant="t",
    input="charged twice",
    task="classification",
    params={"labels": ["billing", "bug"]},
)
EXTRACT = WorkItem(
    job_id="k", tenant="t", input="Order 7", task="extraction", params={"json_schema": {"type": "object"}}
)


def backend(cls, provider: str):
    settings = load_settings()
    return cls(
        provider, settings.providers[provider], settings.pools["slm"], base_url="http://127.0.0.1:1/v1"
    )


def test_vllm_classification_uses_structured_outputs_choice() -> None:
    request = backend(OpenAIChatBackend, "vllm").request(ITEM, TaskType.CLASSIFICATION)
    assert request["extra_body"] == {"structured_outputs": {"choice": ["billing", "bug"]}}
    assert request["logprobs"] is True
    assert "billing, bug" in request["messages"][0]["content"]


def test_openai_classification_uses_json_schema_enum() -> None:
    request = backend(OpenAIChatBackend, "openai").request(ITEM, TaskType.CLASSIFICATION)
    assert request["response_format"]["json_schema"]["schema"]["properties"]["label"]["enum"] == [
        "billing",
        "bug",
    ]
    assert "extra_body" not in request


def test_vllm_extraction_uses_structured_outputs_json() -> None:
    request = backend(OpenAIChatBackend, "vllm").request(EXTRACT, TaskType.EXTRACTION)
    assert request["extra_body"] == {"structured_outputs": {"json": {"type": "object"}}}


def test_anthropic_forces_an_answer_tool_with_the_label_enum() -> None:
    request = backend(AnthropicBackend, "anthropic").request(ITEM, TaskType.CLASSIFICATION)
    assert request["tool_choice"] == {"type": "tool", "name": "answer"}
    assert request["tools"][0]["input_schema"]["properties"]["label"]["enum"] == ["billing", "bug"]
    assert request["messages"] == [{"role": "user", "content": "charged twice"}]
