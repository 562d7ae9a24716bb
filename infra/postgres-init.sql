-- The image creates `kiln` (MLflow's backend store); Prefect gets a database of its own,
-- named as `kiln up` names it: the MLflow database plus `_prefect`.
CREATE DATABASE kiln_prefect OWNER kiln;
