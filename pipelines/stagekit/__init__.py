"""What stage adapters share: the contract with the executor (contract), fitting and
scoring (training), the learned-nothing check (majority), pretrained checkpoints
(pretrained) and the explanations the evaluate stage adds (explaining)."""
