"""Dagster-free logic the ml4t pipeline assets call: loading, schemas, timing, joins, reports."""
