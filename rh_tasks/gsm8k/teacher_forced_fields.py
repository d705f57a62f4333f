"""What the teacher-forced GSM8K tasks write into their documents, and which of them the report pairs or classes.

Kept apart from the tasks themselves so that the report reads these names without importing lm-eval.
"""

CONTINUATION = "continuation"  # the gold text scored after the prompt
BEFORE_ANSWER = "before_answer"  # the same text up to and including "The answer is"
TWINS = {"gsm8k_cot_nll": "gsm8k_direct_nll"}  # chain of thought -> direct answers to the same questions
CLASSED = ("gsm8k_cot_nll",)  # tasks whose continuation tokens the report classes (token_classes)
