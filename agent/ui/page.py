"""The web page: Gradio Blocks laid out as the design describes, wired to the engine.

Left column: system prompt, mode, tools (each with its policy), the JSON schema editor,
sampling, ``tool_choice``, the model URL and its status, "Load task file". Right column:
the conversation (streamed; tool calls as collapsible messages), Approve / Deny, Stop,
Resume, the metrics, the JSON answer, the trace download. A right sidebar lists past
conversations and runs. A plain banner says so when the model is simulated.

The conversation's id lives in the page's URL (``?thread=ID``): a reload shows the same
conversation (and re-attaches to a turn still running), a new tab starts its own. Every
handler is a coroutine; the Chatbot shows text only (:mod:`agent.ui.view` escapes it,
markdown, LaTeX and custom tags are off). Handlers live in :mod:`agent.ui.handlers`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local tool
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")  # nor from huggingface_hub (Gradio's)
# Gradio summarises its request log with pandas after every event, for a monitoring
# dashboard this page does not use: only now and then.
os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "1000")

import gradio as gr

from agent.ui.engine import Engine
from agent.ui.settings import MODES, TOOL_CHOICES, policy_summary

__all__ = ["CSS", "THEME", "PageConfig", "build_page"]

CSS = """
#chat .message-content, #chat .md, #approval-text textarea { white-space: pre-wrap; }
#sim-banner { background: #fff3cd; border: 1px solid #e0b000; color: #5c4400;
  padding: 6px 12px; border-radius: 6px; font-weight: 600; }
#model-status textarea, #schema-status textarea { font-size: 0.85em; }
#metrics table { font-size: 0.85em; }
"""
# Local fonts only: the default theme would fetch Google Fonts, which a local tool (and
# an offline machine) should not.
THEME = gr.themes.Default(
    primary_hue="indigo",
    font=["ui-sans-serif", "system-ui", "sans-serif"],
    font_mono=["ui-monospace", "Consolas", "monospace"],
)
_URL_JS = """(t) => { const u = new URL(window.location.href);
  if (t) { u.searchParams.set('thread', t); } else { u.searchParams.delete('thread'); }
  window.history.replaceState(null, '', u); return t; }"""
_THREAD_FROM_URL_JS = "() => new URLSearchParams(window.location.search).get('thread') || ''"


@dataclass(frozen=True)
class PageConfig:
    """What the page starts with."""

    model_url: str
    simulated: str | None = None
    """Set when the model is the project's simulator: what it replays (for the banner)."""
    title: str = "Hermes agent"


def build_page(engine: Engine, config: PageConfig) -> gr.Blocks:
    """The page (call ``.launch(...)`` with :data:`THEME` and :data:`CSS`)."""
    from agent.ui.handlers import Handlers

    with gr.Blocks(title=config.title) as page:
        c = _Components()
        c.banner = gr.Markdown(
            _banner(config.simulated), elem_id="sim-banner", visible=bool(config.simulated)
        )
        c.thread = gr.Textbox(visible=False, label="thread")
        c.pending = gr.Textbox(visible=False, label="message")  # the message being sent
        c.stop_reply = gr.Textbox(visible=False, label="stop")  # /stop's answer, for the API
        c.request = gr.JSON(visible=False, label="request")  # Send's message and settings
        c.api_send = gr.Button(visible=False)  # /send's trigger (the API's; the page has its own)
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=320):
                _left_column(c, engine, config)
            with gr.Column(scale=5, min_width=480):
                _right_column(c)
        with gr.Sidebar(label="History", position="right", open=False, width=380):
            _history_panel(c)
        Handlers(engine, config, c).wire(page)
    return page


class _Components:
    """The page's components by name (filled in while laying out)."""

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"no component {name!r} on the page")


def _left_column(c: _Components, engine: Engine, config: PageConfig) -> None:
    task = engine.base
    c.system = gr.Textbox(
        task.system or "",
        label="System prompt",
        lines=3,
        info="Starts a new conversation; a running one keeps its own.",
    )
    mode = "json" if task.output_schema else ("tools" if task.tools.enabled else "chat")
    c.mode = gr.Radio([(v, k) for k, v in MODES.items()], value=mode, label="Mode")
    c.tools = gr.CheckboxGroup(
        _tool_choices(engine),
        value=list(task.tools.enabled),
        label="Tools",
        info=f"Workspace {_shown(task.workspace_dir())}. Policies are the server's (task "
        "file, options); the page cannot widen them.",
        interactive=mode != "chat",
    )
    with gr.Group(visible=mode == "json") as c.schema_group:
        import json

        schema = json.dumps(task.output_schema or _DEFAULT_SCHEMA, indent=2)
        c.schema = gr.Code(schema, language="json", label="JSON schema", interactive=True, lines=6)
        c.schema_status = gr.Textbox(
            "valid JSON Schema", show_label=False, interactive=False, elem_id="schema-status"
        )
    _sampling(c, task)
    c.tool_choice = gr.Dropdown(
        [*TOOL_CHOICES, *engine_tool_names(engine)], value="auto", label="tool_choice"
    )
    with gr.Group():
        c.model_url = gr.Textbox(config.model_url, label="Model URL (vLLM)")
        c.model_status = gr.Textbox(
            "checking…", show_label=False, interactive=False, elem_id="model-status"
        )
        c.check_model = gr.Button("Check model", size="sm")
    c.task_file = gr.UploadButton(
        "Load task file", file_types=[".yaml", ".yml"], file_count="single", size="sm"
    )
    c.task_status = gr.Textbox(
        f"task: {task.name or task.path or '(none)'}", show_label=False, interactive=False
    )


def _sampling(c: _Components, task: Any) -> None:
    sampling = task.model.sampling
    with gr.Accordion("Sampling", open=True):
        c.temperature = gr.Slider(0, 2, sampling.temperature or 0.0, step=0.05, label="Temperature")
        c.top_p = gr.Slider(0.05, 1.0, sampling.top_p or 1.0, step=0.01, label="Top-p")
        c.max_tokens = gr.Slider(16, 8192, sampling.max_tokens, step=16, label="Max tokens")
        c.seed = gr.Textbox(
            "" if sampling.seed is None else str(sampling.seed), label="Seed (blank: random)"
        )


_DEFAULT_SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string"}},
    "required": ["answer"],
}


def _right_column(c: _Components) -> None:
    c.chat = gr.Chatbot(
        label="Conversation",
        elem_id="chat",
        height=560,
        render_markdown=False,
        sanitize_html=True,
        allow_tags=False,
        latex_delimiters=[],
        feedback_options=None,
        buttons=["copy", "copy_all"],
    )
    with gr.Group(visible=False, elem_id="approval") as c.approval_group:
        c.approval_text = gr.Textbox(
            label="Approval needed: these calls have side effects",
            interactive=False,
            lines=2,
            elem_id="approval-text",
        )
        with gr.Row():
            c.approve = gr.Button("Approve", variant="primary", elem_id="approve-btn")
            c.deny = gr.Button("Deny", variant="stop", elem_id="deny-btn")
    with gr.Row(equal_height=True):
        c.message = gr.Textbox(
            placeholder="Ask something…",
            label="Message",
            show_label=False,
            scale=6,
            lines=1,
            elem_id="message",
        )
        c.send = gr.Button("Send", variant="primary", scale=1, elem_id="send-btn")
        c.stop = gr.Button("Stop", variant="stop", scale=1, interactive=False, elem_id="stop-btn")
    with gr.Row():
        c.resume = gr.Button("Resume", size="sm", visible=False, elem_id="resume-btn")
        c.new = gr.Button("New conversation", size="sm", elem_id="new-btn")
        c.download = gr.DownloadButton(
            "Download trace", size="sm", interactive=False, elem_id="download-btn"
        )
    c.status = gr.Textbox("Ready.", show_label=False, interactive=False, elem_id="status")
    c.metrics = gr.Markdown("", elem_id="metrics")
    with gr.Group(visible=False) as c.json_group:
        c.json_out = gr.Code(language="json", label="JSON answer", interactive=False)
        c.json_status = gr.Textbox(show_label=False, interactive=False, elem_id="json-status")


def _history_panel(c: _Components) -> None:
    gr.Markdown("### Past conversations")
    c.conversations = gr.Dropdown([], label="Open a conversation", interactive=True)
    c.refresh = gr.Button("Refresh", size="sm")
    gr.Markdown("### Runs")
    c.runs = gr.Dataframe(
        headers=["run", "conversation", "status", "steps", "calls", "tokens", "started"],
        interactive=False,
        wrap=True,
    )


def _tool_choices(engine: Engine) -> list[tuple[str, str]]:
    from tools.registry import ToolRegistry

    registry = ToolRegistry.default()
    policies, approval = engine.base.tool_policies(), engine.base.approval.rule()
    out = []
    for tool in registry:
        effects = "some" if callable(tool.side_effects) else bool(tool.side_effects)
        summary = policy_summary(tool.name, policies, approval, effects)
        out.append((f"{tool.name} — {summary}", tool.name))
    return out


def _shown(path: Path) -> str:
    """A path as the page shows it: relative to the current folder when inside it."""
    try:
        return str(path.relative_to(Path.cwd())) or "."
    except ValueError:
        return str(path)


def engine_tool_names(engine: Engine) -> list[str]:
    """Every tool the page offers (built-ins and installed plugins)."""
    return [name for _, name in _tool_choices(engine)]


def _banner(simulated: str | None) -> str:
    if not simulated:
        return ""
    from agent.ui.view import escape

    return (
        f"Model: SIMULATED — the project's simulated vLLM server {escape(simulated)}; "
        "no real model is running."
    )
