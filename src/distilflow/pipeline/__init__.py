"""What drives the stages, above them: the stages in order with their checks and fingerprints (stages.py), the
runner that takes a job through them under its lock (runner.py), starting a job in the background (start.py) and
canceling one (cancel.py). No stage imports this package."""
