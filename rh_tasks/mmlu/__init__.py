"""The ``mmlu`` task family (task_configs/mmlu): the packaged MMLU questions."""
