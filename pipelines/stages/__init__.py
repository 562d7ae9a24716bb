"""Stage adapters, one module per stage of dvc.yaml, each `run(ctx: StageContext) ->
StageResult` (see pipelines/stagekit/contract.py); pipelines/run/executor.py runs them."""
