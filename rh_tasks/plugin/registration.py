"""Registers ``rh-masked`` and the rh-eval task folder with lm-eval.

Called by the start-up hook (:mod:`rh_eval_autoload`) right after lm-eval's registry and task manager load,
and explicitly by ``rh-eval run`` and :func:`register`.
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path

MODEL_NAME = "rh-masked"
MODEL_TARGET = "model_wrappers.lm.rh_masked:RHMaskedLM"


def task_configs_dir() -> Path:
    """Installed wheels carry the YAMLs inside ``rh_tasks``; a source checkout keeps them at its top level."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "task_configs", package.parent / "task_configs"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"rh-eval's task_configs folder is missing next to {package}; reinstall rh-eval.")


def register_model(registry_module) -> None:
    # Built-ins first: lm-eval loads them only while its registry is empty, so registering ours first would hide them.
    import lm_eval.models  # noqa: F401

    if MODEL_NAME not in registry_module.model_registry:
        registry_module.model_registry.register(MODEL_NAME, target=MODEL_TARGET)


def add_task_path(manager_module) -> None:
    """Put our task folder first on every TaskManager's include path, so a user's own tasks still win."""
    manager_cls = manager_module.TaskManager
    original = manager_cls.__init__
    if getattr(original, "_rh_eval", False):
        return
    signature = inspect.signature(original)
    ours = str(task_configs_dir())

    @functools.wraps(original)
    def __init__(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        if bound.arguments.get("include_defaults", True):
            user = bound.arguments.get("include_path")
            user_paths = [] if user is None else [user] if isinstance(user, (str, Path)) else list(user)
            others = [p for p in user_paths if str(Path(p).resolve()) != ours]
            bound.arguments["include_path"] = [ours, *others]
        original(*bound.args, **bound.kwargs)

    __init__._rh_eval = True
    manager_cls.__init__ = __init__


def register() -> None:
    """Make ``rh-masked`` and the rh-eval tasks known to lm-eval in this process (no-op if already done)."""
    import lm_eval.api.registry
    import lm_eval.tasks.manager

    register_model(lm_eval.api.registry)
    add_task_path(lm_eval.tasks.manager)
