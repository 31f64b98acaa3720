"""grucy's version (read by the package, the file format's ``writer`` and the CLI)."""

__version__ = "0.1.0"
