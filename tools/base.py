"""Defining tools: ``@tool``, ``Tool`` and ``ToolContext`` (schemas: :mod:`tools._schema`).

A tool is one of:

- a typed Python function (sync or async) with a Google-style docstring, turned into a
  `Tool` by ``@tool`` or ``Tool.from_function``; its JSON Schema is derived from the
  signature through pydantic (types, defaults, ``Literal``/``Enum``, pydantic models,
  ``Optional``, ``list[...]``, ``dict``) and the descriptions from the docstring;
- an object (or class) with an explicit JSON Schema: attributes ``name``, ``description``,
  ``parameters`` and a method ``run(self, arguments: dict, ctx: ToolContext)``;
- a langchain-core tool (``BaseTool`` or ``@langchain_core.tools.tool``), run in-process.

Trade-offs:

- pydantic derives the schema, so we inherit its coverage of Python types and its
  coercion of JSON arguments into enums and models; its ``title`` noise and ``$ref``s are
  stripped/inlined because a small model follows flat schemas better.
- A bad definition is refused when it is built (``ToolDefinitionError``, saying how to
  fix it), never when the model first calls it.
- Tools that run in the sandbox worker (``sandbox="process"``) must be importable by
  reference (``module:qualname``): the worker re-imports them rather than receiving
  pickled code, so closures and ``__main__`` functions are refused for that sandbox.

>>> @tool
... def add(a: int, b: int = 1) -> int:
...     '''Add two numbers.'''
...     return a + b
>>> add.spec().parameters["required"]
['a']
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import json
import re
import threading
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agent.errors import ToolDefinitionError
from agent.types import ToolSpec
from tools._schema import build_args_model, check_schema, parse_docstring

__all__ = ["NAME_PATTERN", "Sandbox", "Tool", "ToolContext", "as_tool", "render_result", "tool"]

Sandbox = Literal["none", "process"]
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
SideEffects = bool | Callable[[dict[str, Any]], bool]


@dataclass
class ToolContext:
    """What a tool may ask for besides its arguments; injected, never shown to the model.

    ``state`` belongs to one run: every call of that run sees it, no other run does (the
    sandbox pool serves many runs in one worker process and keeps their states apart).
    ``shared`` belongs to the worker and is seen by every run it serves: only for what
    runs cannot learn anything from (a read-only database, say). Use `resource` to keep a
    connection open across calls; objects with a ``close()`` are closed when the run ends.

    >>> ToolContext(run_id="r1").resource("n", lambda: 42)
    42
    """

    run_id: str = ""
    call_id: str = ""
    workspace: Path = field(default_factory=lambda: Path("."))
    policies: Any = None  # tools.policy.ToolPolicies; Any keeps this module import-light
    state: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    shared: dict[str, Any] = field(default_factory=dict, repr=False)
    cancel_hooks: list[Callable[[], Any]] = field(default_factory=list, repr=False)
    """How to stop this call from another thread (`on_cancel`), run at its hard timeout."""

    def resource(self, key: str, factory: Callable[[], Any], *, shared: bool = False) -> Any:
        """The object stored under ``key`` (the run's, or with ``shared`` the worker's),
        created by ``factory()`` on first use."""
        store = self.shared if shared else self.state
        with self.lock:  # worker threads may race to create the same DuckDB connection
            if key not in store:
                store[key] = factory()
            return store[key]

    def on_cancel(self, hook: Callable[[], Any]) -> None:
        """Register how to interrupt this call (e.g. a DuckDB cursor's ``interrupt``): at
        the call's hard timeout the sandbox runs the hooks and the call fails alone, where
        a call that cannot be interrupted takes its worker process down with it."""
        self.cancel_hooks.append(hook)

    def cancel(self) -> None:
        """Run the cancel hooks (from another thread); errors in them are ignored."""
        for hook in list(self.cancel_hooks):
            with contextlib.suppress(Exception):
                hook()


@dataclass
class Tool:
    """A callable tool plus what the model sees of it (`spec`).

    ``side_effects`` is a bool or a function of the arguments (``http_request`` has side
    effects when ``method != "GET"``); ``sandbox`` says where it runs: ``"none"`` in the
    dispatcher's process, ``"process"`` in the sandbox worker.

    >>> Tool("echo", "Echo.", {"type": "object", "properties": {}}, fn=lambda: "hi").sandbox
    'none'
    """

    name: str
    description: str
    parameters: dict[str, Any]
    fn: Callable[..., Any]
    side_effects: SideEffects = False
    sandbox: Sandbox = "none"
    ctx_param: str | None = None
    call_style: Literal["kwargs", "dict", "langchain"] = "kwargs"
    ref: str | None = None
    args_model: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        _check_name(self.name)
        if self.sandbox not in ("none", "process"):
            raise ToolDefinitionError(
                f"Tool {self.name!r}: sandbox must be 'none' or 'process', not {self.sandbox!r}."
            )
        if self.sandbox == "process" and not self.ref:
            raise ToolDefinitionError(
                f"Tool {self.name!r} has sandbox='process' but cannot be imported by reference: "
                "define it at module level (not inside a function or in __main__) so the "
                "sandbox worker can import it."
            )
        self.is_async = inspect.iscoroutinefunction(self.fn) or self.call_style == "langchain"

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_function(
        cls,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        side_effects: SideEffects = False,
        sandbox: Sandbox = "none",
    ) -> Tool:
        """Build a tool from a typed function with a docstring.

        >>> def ping() -> str:
        ...     '''Say pong.'''
        ...     return "pong"
        >>> Tool.from_function(ping).name
        'ping'
        """
        tool_name = name or getattr(fn, "__name__", "")
        _check_name(tool_name)
        summary, arg_docs = parse_docstring(inspect.getdoc(fn), tool_name)
        ctx_param = _ctx_param(fn, tool_name)
        model, schema = build_args_model(fn, tool_name, arg_docs, skip=ctx_param)
        return cls(
            name=tool_name,
            description=description or summary,
            parameters=schema,
            fn=fn,
            side_effects=side_effects,
            sandbox=sandbox,
            ctx_param=ctx_param,
            ref=_ref_of(fn),
            args_model=model,
        )

    @classmethod
    def from_object(cls, obj: Any, *, sandbox: Sandbox | None = None) -> Tool:
        """Build a tool from an object or class with an explicit JSON Schema.

        The object has ``name``, ``description``, ``parameters`` (JSON Schema) and
        ``run(self, arguments, ctx)``; optional ``side_effects`` and ``sandbox``.
        """
        inst = obj() if inspect.isclass(obj) else obj
        missing = [a for a in ("name", "description", "parameters", "run") if not hasattr(inst, a)]
        if missing:
            raise ToolDefinitionError(
                f"{type(inst).__name__} is not a tool: it lacks {', '.join(missing)}. Give it "
                "name, description, parameters (a JSON Schema object) and run(arguments, ctx)."
            )
        check_schema(inst.name, inst.parameters)
        return cls(
            name=inst.name,
            description=inst.description,
            parameters=inst.parameters,
            fn=inst.run,
            side_effects=getattr(inst, "side_effects", False),
            sandbox=sandbox or getattr(inst, "sandbox", "none"),
            ctx_param="ctx",
            call_style="dict",
            ref=_ref_of(type(inst)),
        )

    @classmethod
    def from_langchain(cls, lc_tool: Any) -> Tool:
        """Wrap a langchain-core ``BaseTool``; it runs in-process (``ainvoke``)."""
        from langchain_core.utils.function_calling import convert_to_openai_tool

        fn = convert_to_openai_tool(lc_tool)["function"]
        return cls(
            name=fn["name"],
            description=fn.get("description", ""),
            parameters=fn.get("parameters") or {"type": "object", "properties": {}},
            fn=lc_tool.ainvoke,
            call_style="langchain",
        )

    # -- use ----------------------------------------------------------------------------
    def spec(self) -> ToolSpec:
        """What the model sees: name, description and JSON Schema of the arguments."""
        return ToolSpec(self.name, self.description, self.parameters)

    def has_side_effects(self, arguments: dict[str, Any]) -> bool:
        """Whether this call changes the world (``http_request`` POST: yes; GET: no)."""
        if callable(self.side_effects):
            try:
                return bool(self.side_effects(arguments))
            except Exception:  # odd arguments must not end the run: ask, as for a write
                return True
        return bool(self.side_effects)

    def bind(self, arguments: dict[str, Any], ctx: ToolContext | None) -> tuple[tuple, dict]:
        """The positional and keyword arguments of ``fn`` for already-validated JSON args."""
        if self.call_style == "langchain":
            return (arguments,), {}
        if self.call_style == "dict":
            return (arguments, ctx), {}
        kwargs = dict(arguments)
        if self.args_model is not None:
            parsed = self.args_model.model_validate(arguments)
            kwargs = {k: getattr(parsed, k) for k in parsed.model_fields_set}
        if self.ctx_param:
            kwargs[self.ctx_param] = ctx
        return (), kwargs

    async def ainvoke(self, arguments: dict[str, Any], ctx: ToolContext | None = None) -> Any:
        """Run the tool here, in this process (the dispatcher adds timeouts and threads)."""
        args, kwargs = self.bind(arguments, ctx)
        if self.is_async:
            return await self.fn(*args, **kwargs)
        return await asyncio.to_thread(self.fn, *args, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the underlying function directly: decorated functions stay usable."""
        return self.fn(*args, **kwargs)


def tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    side_effects: SideEffects = False,
    sandbox: Sandbox = "none",
) -> Any:
    """Decorator: turn a typed, documented function into a `Tool`.

    >>> @tool(side_effects=True)
    ... def save(text: str) -> str:
    ...     '''Save text.'''
    ...     return "ok"
    >>> save.has_side_effects({})
    True
    """

    def wrap(f: Callable[..., Any]) -> Tool:
        return Tool.from_function(
            f, name=name, description=description, side_effects=side_effects, sandbox=sandbox
        )

    return wrap(fn) if fn is not None else wrap


def as_tool(obj: Any) -> Tool:
    """Coerce anything registrable into a `Tool`: a Tool, function, schema object/class or
    langchain tool. The registry and the sandbox worker both go through here.
    """
    if isinstance(obj, Tool):
        return obj
    if _is_langchain_tool(obj):
        return Tool.from_langchain(obj)
    if inspect.isfunction(obj) or inspect.ismethod(obj) or inspect.isbuiltin(obj):
        return Tool.from_function(obj)
    if hasattr(obj, "parameters") and hasattr(obj, "run"):
        return Tool.from_object(obj)
    raise ToolDefinitionError(
        f"Cannot make a tool from {obj!r}: pass a typed function with a docstring, a Tool, "
        "an object with name/description/parameters/run, or a langchain-core BaseTool."
    )


def render_result(value: Any) -> str:
    """The text the model sees for a tool's return value: strings as-is, the rest as JSON.

    >>> render_result({"a": 1})
    '{"a": 1}'
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if hasattr(value, "model_dump_json"):
        return value.model_dump_json()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


# -- helpers -------------------------------------------------------------------------------
def _check_name(name: str) -> None:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ToolDefinitionError(
            f"Invalid tool name {name!r}: use 1-64 letters, digits, '_' or '-' "
            "(pattern ^[a-zA-Z0-9_-]{1,64}$), e.g. 'get_weather'."
        )


def _ctx_param(fn: Callable[..., Any], name: str) -> str | None:
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable hints are reported by build_args_model with context
        hints = {}
    for pname in inspect.signature(fn).parameters:
        hint = hints.get(pname)
        if pname == "ctx" or hint is ToolContext or ToolContext in typing.get_args(hint):
            return pname
    return None


def _ref_of(fn: Callable[..., Any] | type) -> str | None:
    """``module:qualname`` the sandbox worker can import, None for closures and ``__main__``."""
    module, qual = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or module == "__main__" or "<locals>" in qual or "<lambda>" in qual:
        return None
    return f"{module}:{qual}"


def _is_langchain_tool(obj: Any) -> bool:
    # Checked by module name so langchain-core is imported only when such a tool is used.
    return any(c.__module__.startswith("langchain_core.tools") for c in type(obj).__mro__)
