"""The ``rh-masked`` lm-eval model and the engine that evaluates several conditions from one prefill."""
