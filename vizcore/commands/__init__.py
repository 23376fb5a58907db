"""Subcommands of the `vizcore` CLI, one module each (`add_parser`, `run`)."""
