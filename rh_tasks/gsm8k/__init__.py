"""The ``gsm8k_cot`` task family (task_configs/gsm8k_cot): the packaged GSM8K test set."""
