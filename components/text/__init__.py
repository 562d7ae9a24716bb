"""Text models: the tokenizer, and (to come) the encoders and their training modules."""
