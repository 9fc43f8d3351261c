"""What the stages are handed and write to, below them: what a stage is handed (context.py), the SQLite job store
(store.py), stage progress mirrored into it (progress.py), the models a completed job registers (registry.py), one
process per job (lock.py) and finding and stopping a job's processes (processes.py). What drives the stages is
`distilflow.pipeline`, above them."""
