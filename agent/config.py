"""How a run is configured: sampling, limits and approval, each declared once.

Task files (:mod:`agent.task`), ``Agent(...)``, the backends and ``ChatHermes`` all use
these models; none keeps a copy of their fields. They are pydantic (``extra="forbid"``,
frozen) because they arrive from YAML, the command line and HTTP bodies: a misspelt key
is an error that names it, never a silently ignored setting.

>>> Limits().max_steps
20
>>> Sampling(temperature=0.0).to_request()
{'temperature': 0.0, 'max_tokens': 1024}
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ApprovalMode", "ApprovalRule", "ConfigModel", "Limits", "Sampling", "ToolChoice"]


class ConfigModel(BaseModel):
    """Base of configuration read from files and options: unknown keys are errors, and
    numbers given where text is expected (``year: 2024``) become text."""

    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


class Sampling(ConfigModel):
    """Sampling parameters sent to vLLM; ``None`` leaves the server's default."""

    temperature: float | None = Field(0.7, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=-1)
    min_p: float | None = Field(None, ge=0, le=1)
    max_tokens: int = Field(1024, gt=0, description="Tokens generated per step at most.")
    seed: int | None = None
    repetition_penalty: float | None = Field(None, gt=0)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    stop: list[str] | None = Field(
        None, description="More strings that end the generation (the turn's end always does)."
    )

    def to_request(self) -> dict[str, Any]:
        """The fields that are set (not ``None``), as vLLM request keys."""
        return {k: v for k, v in self.__dict__.items() if v is not None}


class Limits(ConfigModel):
    """When a run stops even without a final answer."""

    max_steps: int = Field(
        20, gt=0, description="Model calls at most, plus one closing call when a limit is hit."
    )
    max_tool_calls: int = Field(50, ge=0, description="Tool calls at most, over the run.")
    deadline_s: float = Field(300.0, gt=0, description="Wall-clock seconds for the whole run.")
    max_tokens: int | None = Field(None, gt=0, description="Token budget (prompt + completion).")
    max_repairs: int = Field(3, ge=0, description="Malformed outputs sent back to fix, at most.")
    loop_threshold: int = Field(
        3, ge=2, description="The N-th identical call gets a notice instead of running; N+1 stops."
    )


ApprovalMode = Literal["none", "side_effects", "all"]
ApprovalRule = ApprovalMode | tuple[str, ...]
"""Which tool calls wait for a human: ``none``; ``side_effects`` (writes: files, non-GET
HTTP, writing SQL); ``all``; or the names of the tools that must ask."""

ToolChoice = Literal["auto", "required", "none"] | str
"""Whether the model must call a tool: ``auto`` (it decides), ``required`` (at least one
call, enforced by structured outputs), ``none`` (no tools are shown and no calls are
read), or a tool's name (a call to that tool, enforced). In an agent run, ``required`` and
a name hold until the run's first tool call, then the choice is ``auto`` again — otherwise
the model could never answer."""
