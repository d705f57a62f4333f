"""Serving engines that live in an environment of their own, next to rh-eval's.

vLLM pins other releases of transformers than rh-eval, so it cannot share rh-eval's environment. An exported
condition is a plain checkpoint, so a second environment that holds only the engine is enough:
:mod:`.environment` creates it, :mod:`.server` starts the engine's OpenAI-compatible server on one exported
folder, and lm-eval's stock ``local-completions`` backend, in rh-eval's environment, evaluates it over HTTP.
"""
