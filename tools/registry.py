"""The tool registry: built-ins and third-party tools, loaded through one path.

Plugin convention (one, like simonw/llm): a distribution declares an entry point in the
group ``agent.tools`` that names a **register hook**, a function ``register(registry)``
which calls ``registry.register(...)`` for each of its tools::

    # pyproject.toml of a plugin
    [project.entry-points."agent.tools"]
    weather = "agent_weather:register"

The built-ins are registered by the same kind of hook (`tools.builtins.register`), through
the same `ToolRegistry.load_plugin`, so they get no special treatment.

Trade-off: a hook costs plugin authors one function, but lets one plugin register many
tools, configure them, or register none (e.g. when an optional dependency is missing).
A failing plugin is refused with a `ToolDefinitionError` naming the entry point.

>>> from tools.base import tool
>>> reg = ToolRegistry()
>>> @reg.register
... @tool
... def ping() -> str:
...     '''Say pong.'''
...     return "pong"
>>> reg.names()
['ping']
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from importlib.metadata import entry_points
from typing import Any

from agent.errors import AgentError, ToolDefinitionError
from agent.types import ToolCall, ToolSpec
from tools._worker import unencodable
from tools.base import Tool, as_tool

__all__ = ["ENTRY_POINT_GROUP", "ToolRegistry"]

ENTRY_POINT_GROUP = "agent.tools"


class ToolRegistry:
    """Tools by name, in registration order. Names are unique.

    >>> ToolRegistry().names()
    []
    """

    def __init__(self, tools: Iterable[Any] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        self.sources: dict[str, str] = {}  # tool name -> where it came from (for `agent tools`)
        self._source = "user"
        for t in tools:
            self.register(t)

    # -- building -----------------------------------------------------------------------
    def register(self, obj: Any) -> Any:
        """Add a tool (Tool, typed function, schema object or langchain tool); returns ``obj``
        so it works as a decorator. Refuses duplicates with a `ToolDefinitionError`.
        """
        t = as_tool(obj)
        if t.name in self._tools:
            raise ToolDefinitionError(
                f"Duplicate tool name {t.name!r} (already registered by {self.sources[t.name]}). "
                "Give one of them another name, e.g. Tool.from_function(fn, name='other_name')."
            )
        self._tools[t.name] = t
        self.sources[t.name] = self._source
        return obj

    def load_plugin(self, hook: Callable[[ToolRegistry], Any], source: str) -> list[str]:
        """Call a ``register(registry)`` hook; return the names it added."""
        if not callable(hook):
            raise ToolDefinitionError(
                f"Plugin {source}: the entry point must name a function register(registry), "
                f"not {type(hook).__name__}."
            )
        before, previous = set(self._tools), self._source
        self._source = source
        try:
            hook(self)
        except ToolDefinitionError as exc:
            raise ToolDefinitionError(f"Plugin {source}: {exc}") from exc
        except AgentError:
            raise
        except Exception as exc:
            raise ToolDefinitionError(
                f"Plugin {source} failed while registering its tools: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            self._source = previous
        return [n for n in self._tools if n not in before]

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> list[str]:
        """Load every installed plugin of ``group``; return the tool names added."""
        added: list[str] = []
        for ep in sorted(entry_points(group=group), key=lambda e: e.name):
            dist = getattr(ep.dist, "name", None) or "?"
            source = f"entry point {ep.name!r} ({ep.value}) of {dist}"
            try:
                hook = ep.load()
            except Exception as exc:
                raise ToolDefinitionError(
                    f"Plugin {source} could not be imported: {type(exc).__name__}: {exc}"
                ) from exc
            added += self.load_plugin(hook, source)
        return added

    @classmethod
    def default(cls, *, plugins: bool = True) -> ToolRegistry:
        """The built-in tools plus, unless ``plugins=False``, installed plugins."""
        from tools import builtins

        reg = cls()
        reg.load_plugin(builtins.register, "built-in")
        if plugins:
            reg.load_entry_points()
        return reg

    def select(self, names: Iterable[str]) -> ToolRegistry:
        """A registry holding only ``names`` (a task's tool list), in that order."""
        sub = ToolRegistry()
        for n in names:
            sub._tools[n] = self.get(n)
            sub.sources[n] = self.sources.get(n, "user")
        return sub

    # -- reading ------------------------------------------------------------------------
    def get(self, name: str) -> Tool:
        """The tool called ``name``; `KeyError` says the closest name when unknown."""
        try:
            return self._tools[name]
        except KeyError:
            hint = self.closest(name)
            raise KeyError(
                f"unknown tool {name!r}" + (f"; did you mean {hint!r}?" if hint else "")
            ) from None

    def has_side_effects(self, call: ToolCall) -> bool:
        """Whether running ``call`` would change the world, for approval.

        An unknown tool has none: it never runs (the dispatcher answers with an error), and
        neither has a call whose arguments hold a lone surrogate, for the same reason.
        """
        tool = self._tools.get(call.name)
        if tool is None or unencodable(call.arguments) is not None:
            return False
        return tool.has_side_effects(call.arguments)

    def closest(self, name: str) -> str | None:
        """The registered name most like ``name`` (difflib), if any is close."""
        match = difflib.get_close_matches(name, list(self._tools), n=1, cutoff=0.5)
        return match[0] if match else None

    def names(self) -> list[str]:
        return list(self._tools)

    def specs(self) -> list[ToolSpec]:
        """What the model sees of every tool, in registration order."""
        return [t.spec() for t in self._tools.values()]

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)
