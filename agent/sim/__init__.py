"""A simulated vLLM server: real HTTP on loopback, scripted outputs, a modeled GPU.

Tests, benchmarks, examples and evals run against it because no GPU or weights are
available. It speaks the part of vLLM's OpenAI-compatible API this project uses, with
vLLM-shaped bodies and errors; outputs come from a policy (a script or a function); timing
follows a model of one GPU (:mod:`agent.sim.engine`); token counts are a deterministic
*approximation* (:mod:`agent.sim.tokens`), not the real Llama 3 tokenizer.

Its answers have vLLM 0.32's shapes, key for key; ``tests/real_vllm`` sends one suite of
requests to the simulator and to a real vLLM and fails on any difference in shape. What
differs on purpose, because the simulator has no model:

- content comes from the policy (a script is sent verbatim, even where a constraint would
  have changed it); token counts come from the approximate tokenizer;
- ``logprobs`` have vLLM's shapes but every token has log-probability 0.0 and is its only
  listed alternative;
- a forced tool call's arguments always fit the tool's schema (vLLM 0.32 enforces them only
  for tools marked ``strict``);
- ``/metrics`` exposes only the series the project reads; ``/version`` says it is simulated;
  a ``prompt`` list of several prompts is refused (the project sends one).

>>> with SimServer(ScriptPolicy(["Hello!"])).start() as sim:
...     import httpx
...     httpx.post(sim.url + "/v1/completions",
...                json={"prompt": "<|im_start|>assistant\\n"}).json()["choices"][0]["text"]
'Hello!'
"""

from agent.sim.engine import PROFILES, Profile
from agent.sim.faults import Faults
from agent.sim.policy import FunctionPolicy, Policy, PolicyError, ScriptPolicy, SimRequest
from agent.sim.server import SimConfig, SimServer

__all__ = [
    "PROFILES",
    "Faults",
    "FunctionPolicy",
    "Policy",
    "PolicyError",
    "Profile",
    "ScriptPolicy",
    "SimConfig",
    "SimRequest",
    "SimServer",
]
