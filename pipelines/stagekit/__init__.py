"""What stage adapters share: the contract with the executor (contract), fitting and
scoring (training), the metrics block of a trained model (trained), the learned-nothing
check (majority), pretrained checkpoints (pretrained) and the explanations the evaluate
stage adds (explaining)."""
