"""``python -m grucy``: the same as the ``grucy`` command."""

from .cli import main

raise SystemExit(main())
