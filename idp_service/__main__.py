"""``python -m idp_service`` runs the ``devicetrust`` CLI."""

from idp_service.cli import main

main()
