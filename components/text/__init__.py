"""Text models: the tokenizer, BERT encoders and classifiers, and the Lightning modules
that train, distill and prune them."""
