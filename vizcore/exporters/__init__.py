"""Exporters: write a `Result` to files. Each registers itself through the `vizcore_add_exporters` hook."""
