import importlib.util
import sys
from pathlib import Path

# The runtime package is not installed, only put on PYTHONPATH (Makefile, pytest); make a bare
# `python -m flow` from the repository root work too.
if importlib.util.find_spec("apinode") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "services" / "apinode"))

from flow.cli import main  # noqa: E402

raise SystemExit(main())
