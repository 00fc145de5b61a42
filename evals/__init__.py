"""Scripted evaluations: ``agent eval`` and its Python API.

- :mod:`evals.suite` — suite files (YAML → pydantic, errors with lines), ``load_suite``;
- :mod:`evals.checks` — the check registry (entry-point group ``agent.checks``), verdicts,
  the ``SampleView`` checks read; built-ins in ``_checks_run`` and ``_checks_state``;
- :mod:`evals.runner` — ``run_suite``: one shared backend, trials, concurrency, infra
  retries, resume; one sample in ``_execute``, shared pieces in ``_setup``;
- :mod:`evals.sim_policy` — the simulated model answering each case from its script;
- :mod:`evals.results`, :mod:`evals.metrics` — the run folder and ``summary.json``;
- :mod:`evals.report`, :mod:`evals.compare`, :mod:`evals.query` — reading runs;
- :mod:`evals.bfcl`, :mod:`evals.bfcl_policy`, :mod:`evals.bfcl_run` — BFCL.

Importing ``evals`` loads nothing: each command imports what it needs.
"""
