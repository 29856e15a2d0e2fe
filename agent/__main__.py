"""``python -m agent`` runs the ``devicetrust-agent`` CLI."""

from agent.cli import main

main()
