"""Where a model's weights come from: a name rh-eval packages, a GGUF file, or a Hugging Face checkpoint."""
