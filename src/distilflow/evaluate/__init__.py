"""Stage 4 and 5: scoring teacher, baseline and distilled student, and the comparison report."""
