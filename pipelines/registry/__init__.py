"""MLflow's model registry as Kiln uses it: registering versions and moving aliases (models),
which version a command means (lookup), the model as code (serving), a version checked
before it loads (versions) and cached on disk (local_model), the promotion gate (gating,
promotion), and the audit trail (audit, audit_copy)."""
