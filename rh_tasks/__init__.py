"""Tasks, data builders, detection, statistics and reporting for rh-eval.

Kept import-free: the start-up hook imports this package in every interpreter.
"""
