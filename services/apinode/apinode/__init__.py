"""apinode: a small, fast runtime speaking the Dataiku API node user API."""

__version__ = "0.1.0"
