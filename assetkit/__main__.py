"""``python -m assetkit`` runs the command line."""

from .cli import main

main()
