"""The exceptions smsched raises and the exit codes the CLI turns them into.

The docstring of each exception is its default message; the CLI prints ``str(exc)`` on one
line and exits with ``exc.exit_code``. Nothing else in the library prints or exits.
"""

from enum import IntEnum


class ExitCode(IntEnum):
    SUCCESS = 0
    ERROR = 1  # runtime failure: unreadable database, disk full, provider configuration rejected
    USAGE = 2  # the user's input was wrong: nothing was changed
    CTRL_C = 130  # interrupted with Ctrl-C (SIGINT)
    TERMINATED = 143  # stopped by SIGTERM, after finishing what was in flight


class SmschedError(Exception):
    """smsched failed"""

    exit_code = ExitCode.ERROR

    def __init__(self, message: str | None = None, details: list[str] | None = None):
        super().__init__(message or self.__doc__)
        # Lines printed before the message, e.g. each bad row of a file.
        self.details = details or []


class UsageError(SmschedError):
    """Invalid input"""

    exit_code = ExitCode.USAGE


class NotFound(UsageError):
    """No such record"""


class InvalidState(UsageError):
    """That operation is not possible in the record's current state"""


class ImportFailed(UsageError):
    """The file cannot be imported"""


class DatabaseError(SmschedError):
    """The database cannot be used"""


class NotSmschedDatabase(UsageError):
    """The file is not an smsched database"""


class ConfigError(UsageError):
    """The configuration is not usable"""


class ProviderConfigError(SmschedError):
    """The provider rejected our credentials or configuration"""
