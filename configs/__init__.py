"""jssl's shipped configs: one ml_collections config file per method (installed as jssl.configs).

Each is loaded by path (`--config configs/simclr.py:PRESET`) or by name (`--config
simclr:PRESET`); see jssl.config_files.
"""
