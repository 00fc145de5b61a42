"""How often a constrained tool call from a real vLLM is a call our parser accepts.

Needs the real-vLLM tier (``bash .ci/real_vllm.sh``). Starts the tier's server, then for
each built-in tool spec (``tools.registry``) sends ``--per-tool`` completions requests whose
prompt is our own Hermes rendering with that tool, under the structural tag the backend sends
for a named ``tool_choice`` (xgrammar's ``triggered_tags``: one ``<tool_call>`` whose body
is ``{"name", "arguments"}`` for the tool). Each answer is parsed with ``agent.hermes.parse``
and each call validated against the tool's JSON Schema. Prints one row per tool and the
totals; raw control characters inside JSON strings (which a strict decoder refuses) are
counted apart, since xgrammar is known to emit them.

    .venv/bin/python -m bench.real_vllm_tool_calls --per-tool 8
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections import Counter
from typing import Any

import httpx
import jsonschema

from agent.chatml import render
from agent.hermes import parse
from agent.llm._decode import structural_tag
from agent.testing import run_real_vllm
from agent.types import Message, ToolSpec
from tests.real_vllm.suite import TOOL_ASKS
from tools.registry import ToolRegistry

_CONTROL = re.compile(r"[\x00-\x1f]")


def _string_has_control(body: str) -> bool:
    """Does a call body hold a raw control character inside a JSON string?"""
    try:
        json.loads(body)
    except ValueError:
        try:
            json.loads(body, strict=False)
        except ValueError:
            return False
        return bool(_CONTROL.search(body))
    return False


def classify(text: str, spec: ToolSpec) -> tuple[str, Any]:
    out = parse(text)
    if out.errors:
        bodies = re.findall(r"<tool_call>\n(.*?)\n</tool_call>", text, re.S)
        if any(_string_has_control(b) for b in bodies):
            return "control_char", out.errors[0].reason
        return "malformed", out.errors[0].reason
    if not out.tool_calls:
        return "no_call", text[:80]
    for call in out.tool_calls:
        if call.name != spec.name:
            return "wrong_name", call.name
        try:
            jsonschema.validate(call.arguments, spec.parameters)
        except jsonschema.ValidationError as exc:
            return "invalid", exc.message
    return "valid", None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-tool", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=200)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--json", help="write every answer and its verdict here")
    args = ap.parse_args()
    specs = ToolRegistry.default(plugins=False).specs()
    totals: Counter[str] = Counter()
    rows, samples = [], []
    with run_real_vllm() as server, httpx.Client(timeout=600) as client:
        print(f"server ready in {server.ready_s:.1f} s")
        started = time.monotonic()
        for spec in specs:
            prompt = render(
                [Message("user", TOOL_ASKS.get(spec.name, f"Use {spec.name}."))], [spec]
            )
            counts: Counter[str] = Counter()
            for seed in range(args.per_tool):
                body = {
                    "model": server.model,
                    "prompt": prompt,
                    "seed": seed,
                    "temperature": args.temperature,
                    "max_tokens": args.max_tokens,
                    "stop": ["<|im_end|>"],
                    "skip_special_tokens": False,
                    "add_special_tokens": False,
                    "structured_outputs": {
                        "structural_tag": structural_tag([spec], required=True, first_only=True)
                    },
                }
                data = client.post(server.url + "/v1/completions", json=body).json()
                choice = data["choices"][0]
                verdict, detail = classify(choice["text"], spec)
                if choice["finish_reason"] == "length" and verdict != "valid":
                    verdict = "cut_by_max_tokens"
                counts[verdict] += 1
                samples.append(
                    {
                        "tool": spec.name,
                        "seed": seed,
                        "verdict": verdict,
                        "detail": detail,
                        "text": choice["text"],
                    }
                )
            totals.update(counts)
            rows.append((spec.name, counts))
        elapsed = time.monotonic() - started
    kinds = [
        "valid",
        "invalid",
        "malformed",
        "control_char",
        "no_call",
        "wrong_name",
        "cut_by_max_tokens",
    ]
    print(f"{'tool':<14}" + "".join(f"{k:>18}" for k in kinds))
    for name, counts in rows:
        print(f"{name:<14}" + "".join(f"{counts[k]:>18}" for k in kinds))
    print(f"{'total':<14}" + "".join(f"{totals[k]:>18}" for k in kinds))
    n = sum(totals.values())
    print(f"{n} calls in {elapsed:.0f} s; {totals['valid']}/{n} parse and fit their schema")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(samples, fh, indent=1)


if __name__ == "__main__":
    main()
