"""The CLI process asks polars' allocator to return freed pages at once (peak RSS, issue 27)."""

from __future__ import annotations

import os
import subprocess
import sys

_SHOW_CONF = "import os, ml4t_pipeline.cli, polars\nprint(os.environ['_RJEM_MALLOC_CONF'])\n"


def _conf_seen_by_polars(env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "_RJEM_MALLOC_CONF"}
    if env_value is not None:
        env["_RJEM_MALLOC_CONF"] = env_value
    out = subprocess.run(
        [sys.executable, "-c", _SHOW_CONF], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def test_cli_import_sets_muzzy_decay_zero_before_polars_loads() -> None:
    conf = _conf_seen_by_polars(None)

    # polars puts its defaults first and the environment's value after them: the last wins
    assert conf.split(",")[-1] == "muzzy_decay_ms:0"


def test_cli_import_keeps_users_allocator_conf_last() -> None:
    conf = _conf_seen_by_polars("muzzy_decay_ms:250,narenas:2")

    assert conf.endswith("muzzy_decay_ms:0,muzzy_decay_ms:250,narenas:2")
