"""The ``niah`` task family (task_configs/niah): needle-in-a-haystack prompts on a lengths x depths grid."""
