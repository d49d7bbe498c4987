"""Experiments are partitions: one partition key per experiment YAML file (its file stem)."""

from __future__ import annotations

import dagster as dg

EXPERIMENTS = "experiments"

experiments_partitions = dg.DynamicPartitionsDefinition(name=EXPERIMENTS)
"""Dynamic partitions kept in sync with the configs folder by ``experiment_configs_sensor``."""

RERUN_ON_NEW_INPUTS = dg.AutomationCondition.eager()
"""Automation condition of every experiment asset: rerun a partition when an upstream partition
gets new data (a new input-file version or a fresh materialization), once nothing upstream is
missing or in progress."""
