"""``python -m gateway`` is the same as the ``sensor-gateway`` command."""

from gateway.cli import main

raise SystemExit(main())
