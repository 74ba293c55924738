"""The application layer: the ``macdmp`` command and each of its subcommands.

Every entry point lives here, above the library, and calls the library's Python API (never
another command's argv). Nothing in the library imports this package.
"""
