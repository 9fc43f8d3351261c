"""Jobs: the SQLite job store (store.py), stage progress (progress.py), what a stage is handed (context.py), and
the runner that takes a job through its stages (runner.py). Stages import the first three, never the runner."""
