"""``python -m aware_restore``."""

from .cli import main

raise SystemExit(main())
