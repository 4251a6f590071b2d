"""What a user hands the harness, checked before any work: paths named on the command line
(`paths.py`), YAML files (`yaml_files.py`, the one reader) and HARNESS_* variables (`environment.py`).
Each fault is one UserError line naming the input and the fix."""
