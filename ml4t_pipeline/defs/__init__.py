"""Dagster wiring only: assets, checks, resources, jobs, sensors and schedules, one kind per file.

We use a few Dagster APIs that Dagster labels beta or preview on purpose (observable source
assets, data versions, ``include_sources``); their warnings say nothing a user can act on, so
they are silenced for this package's definitions.
"""

import warnings

from dagster import BetaWarning, PreviewWarning

warnings.filterwarnings("ignore", category=BetaWarning)
warnings.filterwarnings("ignore", category=PreviewWarning)
