"""``python -m shrink.bench``."""
from .cli import main

raise SystemExit(main())
