"""Task infrastructure shared by every task family: options, tokenizer, packaged data, scoring, token splicing."""
