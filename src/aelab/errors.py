"""The one exception type users see: a clear, one-line message naming the problem and the fix."""
import difflib


class AelabError(Exception):
    """A problem with the user's input, files or environment.

    The command line prints ``aelab: error: <message>`` and exits with code 2, without a traceback.
    Messages are one line: what is wrong, then what to do about it.
    """


def closest(name: str, choices) -> str:
    """Return ' (did you mean X?)' for the closest valid choice, or '' when nothing is close."""
    match = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type's name when the message is empty), at most
    ``limit`` characters: for quoting a library's error inside one of ours."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]
