"""Stage adapters, one module per stage of dvc.yaml, each `run(ctx: StageContext) ->
StageResult` (see pipelines/contract.py); pipelines/executor.py runs them."""
