"""What every part of Kiln stands on: where it runs and the environment it gives the tools
(env), params.yaml as typed config (params, profiles), the DAG as DVC reads it (dag), one
run at a time (lock), processes that end with the run (lifecycle), what `kiln` prints
(console), atomic writes (io) and the typed records stages hand on (records)."""
