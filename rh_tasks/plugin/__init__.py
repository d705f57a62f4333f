"""How rh-eval plugs into lm-eval and the shell: the ``rh-eval`` command, ``rh-eval run``, registration.

Kept import-free: the start-up hook imports this package in every interpreter."""
