"""The Dagster wiring, loaded by `load_from_defs_folder`: assets (one per Plannr collection and
the analyst views), their checks, jobs, schedules, sensors, partitions and resources."""
