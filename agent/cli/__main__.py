"""``python -m agent.cli``: the ``agent`` command without its installed script."""

from agent.cli import main

main()
