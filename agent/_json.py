"""JSON as the spec has it, for text the model or a tool produced.

Python's ``json`` accepts ``NaN``, ``Infinity`` and numbers too large for a float (which
become infinity); none is JSON, and re-rendering any of them produces invalid JSON.
``STRICT`` refuses them with a ``ValueError`` that says why.

It does accept raw control characters (a tab, ``\x1d``) inside strings, which the JSON
spec does not: xgrammar's grammars let them through, so a call that is valid by
construction would otherwise be reported malformed. Re-rendered, they come out escaped.

>>> STRICT.decode('{"a": 1.5}')
{'a': 1.5}
"""

from __future__ import annotations

import json
import math

__all__ = ["STRICT"]


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is out of range for a JSON number")
    return value


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON; write a number or null")


STRICT = json.JSONDecoder(parse_float=_finite, parse_constant=_no_constant, strict=False)
