"""The one exception type for problems a user can fix (bad input, bad flags, bad files).

Library code raises `UserError` with a one-line message; the CLI and scripts print it as
`error: <message>` on stderr and exit with status 2, never with a traceback.
"""


class UserError(Exception):
    """A problem with the user's input, reported as one line and exit status 2."""

    exit_code = 2
