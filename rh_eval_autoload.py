"""Start-up hook that lets the stock ``lm_eval`` command see ``rh-masked`` and the rh-eval tasks.

lm-eval 0.4.13 has no plugin discovery (later releases also find ``rh-masked`` through the ``lm_eval.models``
entry point), so ``rh_eval_autoload.pth`` imports this module in every interpreter. It
must stay cheap: it is a top-level module (no package to import), imports only ``sys``, installs a finder that
reacts to exactly two lm-eval modules, and registers the plugin right after they execute. It never imports
torch or lm_eval itself, and a failure only warns. Set ``RH_EVAL_AUTOLOAD=0`` to switch it off.
"""

import sys

_TARGETS = {
    "lm_eval.api.registry": "register_model",
    "lm_eval.tasks.manager": "add_task_path",
}


def _fire(name, module):
    try:
        from rh_tasks.plugin import registration

        getattr(registration, _TARGETS[name])(module)
    except Exception as err:  # a broken hook must never break the interpreter or lm-eval itself
        import warnings

        warnings.warn(
            f"rh-eval could not register with lm-eval ({type(err).__name__}: {err}); "
            "use `rh-eval run ...` instead of `lm_eval ...`, or set RH_EVAL_AUTOLOAD=0 to silence this.",
            stacklevel=2,
        )


class _Loader:
    def __init__(self, loader, name):
        self.loader, self.name = loader, name

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        _fire(self.name, module)


class _Finder:
    def __init__(self):
        self.pending = set(_TARGETS)

    def find_spec(self, name, path=None, target=None):
        if name not in self.pending:
            return None
        self.pending.discard(name)
        if not self.pending:
            sys.meta_path.remove(self)
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _Loader(spec.loader, name)
                return spec
        return None


def install():
    finder = _Finder()
    for name in _TARGETS:
        if name in sys.modules:
            finder.pending.discard(name)
            _fire(name, sys.modules[name])
    if finder.pending:
        sys.meta_path.insert(0, finder)


install()
