"""Benchmarks: `python -m jssl.bench input ...` (host pipeline), `python -m jssl.bench step ...`.

Each sub-command is a module of this package with `run(argv)` (parses its own flags, prints one
JSON object as its last stdout line); a module with only absl-style `main(argv)` and flags defined
at import is run through `absl.app.run`.
"""
