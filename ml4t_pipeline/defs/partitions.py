"""Experiments are partitions: one partition key per experiment YAML file (its file stem)."""

from __future__ import annotations

import dagster as dg

EXPERIMENTS = "experiments"

experiments_partitions = dg.DynamicPartitionsDefinition(name=EXPERIMENTS)
"""Dynamic partitions kept in sync with the configs folder by ``experiment_configs_sensor``."""
