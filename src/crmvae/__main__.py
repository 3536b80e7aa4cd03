"""``python -m crmvae``: the command line (see :mod:`crmvae.cli`)."""

from .cli import main

raise SystemExit(main())
