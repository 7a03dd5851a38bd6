"""``python -m assetkit.cli`` runs the command line (same as the ``assetkit`` script)."""

from . import main

main()
