"""The ``extractive_qa`` task family (task_configs/extractive_qa): SQuAD questions in long distractor contexts."""
