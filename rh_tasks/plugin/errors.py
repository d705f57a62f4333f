"""How every ``rh-eval`` sub-command fails: one message line that says what is wrong and how to fix it, exit 2.

A sub-command raises :class:`CommandError` (or one of the error types it names) for anything the user can fix;
:func:`command` turns it into that line, with no traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import logging

logger = logging.getLogger("rh_tasks")

EXIT_USAGE = 2


class CommandError(Exception):
    """A problem with the user's input or environment; the message names it and the fix."""


def command(*user_errors: type[BaseException]):
    """Decorate a sub-command's ``main(args)``: ``CommandError`` and ``user_errors`` give one line and exit 2."""
    caught = (CommandError, *user_errors)

    def decorate(func):
        @functools.wraps(func)
        def wrapper(args) -> int:
            try:
                return func(args)
            except caught as err:
                logger.error("%s", " ".join(str(err).split("\n")))
                return EXIT_USAGE

        return wrapper

    return decorate
