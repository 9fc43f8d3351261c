"""Text metrics with per-example sufficient statistics (text.py) and bootstrap intervals over them (intervals.py).

Knows nothing of tasks, models or jobs: tasks build on it."""
