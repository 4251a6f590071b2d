"""Run records: the schema (schema.py), the run folders that hold them (store.py) and what a record
says of the machine (machine.py). Everything that writes or reads a record.json goes through here."""
from harness.records.machine import (
    code_version,
    cpu_name,
    environment,
    environment_file,
    environment_pins,
    image_libraries,
    matching_environment_file,
    names_versions,
)
from harness.records.schema import KINDS, SCHEMA, SCORE_FILES, Record, config_section, model_section, validate_record
from harness.records.store import (
                                     RECORD,
                                     SETTINGS,
                                     FinishedRun,
                                     Reproduction,
                                     check_runs_root,
                                     complete_run,
                                     hold_run,
                                     is_finished,
                                     iter_records,
                                     new_run_dir,
                                     new_run_id,
                                     read_record,
                                     read_settings,
                                     refuse_changed_settings,
                                     run_folder,
                                     save_arrays,
                                     unfinished_runs,
                                     utc_now,
                                     write_new,
                                     write_record,
)

__all__ = ["FinishedRun", "KINDS", "RECORD", "SCHEMA", "SETTINGS", "SCORE_FILES", "Record", "Reproduction",
           "check_runs_root", "code_version", "complete_run", "config_section", "cpu_name", "environment",
           "environment_file", "environment_pins", "hold_run", "image_libraries", "is_finished", "iter_records",
           "matching_environment_file", "model_section", "names_versions", "new_run_dir", "new_run_id", "read_record",
           "read_settings", "refuse_changed_settings", "run_folder", "save_arrays", "unfinished_runs", "utc_now",
           "validate_record", "write_new", "write_record"]
