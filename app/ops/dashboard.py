"""Where the admin dashboard's numbers live: jobs/rollup.py writes them every few seconds, the
page reads this one small value (and then listens to admin.dashboard), never the submissions
table."""

import json

STATS_KEY = "ops:dashboard:stats"
INTAKE_KEY = "ops:dashboard:intake_per_minute"
COUNTED_AT_KEY = "ops:dashboard:counted_at"
PREVIOUS_KEY = "ops:dashboard:previous_counters"
WINDOW_MINUTES = 60


def latest_stats(redis):
    raw = redis.get(STATS_KEY)
    return json.loads(raw) if raw else None
