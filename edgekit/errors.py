"""Errors a user can act on. The CLI prints them as one line and exits with their code."""


class EdgekitError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        text = self.message if not self.hint else f"{self.message} ({self.hint})"
        return " ".join(text.split())


def first_line(e: BaseException, limit: int = 200) -> str:
    """The first non-empty line of a third-party exception, for a one-line error."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return (lines[0] if lines else type(e).__name__)[:limit]


class UnknownName(EdgekitError):
    """A model, target or format name that is not known; carries the closest names."""

    def __init__(self, kind: str, name: str, known: list[str]):
        import difflib

        close = difflib.get_close_matches(name.lower(), known, n=3, cutoff=0.5)
        if not close:
            close = [k for k in known if name.lower() in k][:3]
        hint = f"did you mean: {', '.join(close)}" if close else f"see `edgekit {kind}s`"
        super().__init__(f"unknown {kind} '{name}'", hint)
        self.suggestions = close


class ConfigError(EdgekitError):
    """A malformed file: names the file and the key."""

    def __init__(self, path, key: str | None, problem: str):
        where = f"{path}" + (f": key '{key}'" if key else "")
        super().__init__(f"{where}: {problem}")
        self.path = str(path)
        self.key = key


class MissingDependency(EdgekitError):
    """An optional backend is not installed; names the extra that installs it."""

    def __init__(self, what: str, extra: str, detail: str | None = None):
        msg = f"{what} is not installed"
        if detail:
            msg += f" ({detail})"
        super().__init__(msg, f'install it with: pip install "edgekit[{extra}]"')
        self.extra = extra
