"""ml4t pipeline: the Dagster code location around the ``engine`` backtester."""
