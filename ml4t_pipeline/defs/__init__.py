"""Dagster wiring only: assets, checks, resources, jobs and sensors, one kind per file."""
