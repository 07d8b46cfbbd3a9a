"""Errors that reach the user as one line (the CLI prints them without a traceback)."""


class UserError(Exception):
    """Bad input from the user or a file: the message names the field and what is allowed."""
