"""Generators of the documentation: the CLI reference (cli), the MkDocs hooks (hooks), the README table (readme)."""
