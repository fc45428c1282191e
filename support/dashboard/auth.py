"""Who may use the controls: bearer tokens from the environment or a secret file, never the repo.

* ``QUAYSIDE_DASHBOARD_TOKEN``: one secret, for the operator named ``operator``.
* ``QUAYSIDE_TOKENS_FILE`` (the ``tokens_file`` setting): one ``name:token`` a line (blank lines
  and ``#`` comments ignored). A line without a colon is a bare token for ``operator``, so a
  secret file holding nothing but the token works too. Compose mounts it from a secret at
  ``/run/secrets/...``.

The file is read at every control request, so a rotated secret applies without a restart and a
viewer that never presses a button never needs it. Tokens are compared in constant time: both
sides are hashed to the same length and every configured token is compared, match or not.
With no token configured, controls are refused (and the refusal says how to configure one);
viewing never needs a token.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ENV_OPERATOR", "MIN_TOKEN_LENGTH", "TOKEN_ENV", "TOKENS_FILE_ENV", "Tokens", "load_tokens"]

TOKEN_ENV = "QUAYSIDE_DASHBOARD_TOKEN"
TOKENS_FILE_ENV = "QUAYSIDE_TOKENS_FILE"
ENV_OPERATOR = "operator"
MIN_TOKEN_LENGTH = 16

HOW_TO_CONFIGURE = (
    f"controls are disabled: no operator token is configured. Set {TOKEN_ENV} (operator '{ENV_OPERATOR}') "
    f"or {TOKENS_FILE_ENV} (a file of name:token lines, e.g. a secret mounted at /run/secrets/quayside_tokens) "
    "in the dashboard's environment, then send 'Authorization: Bearer <token>'"
)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


@dataclass
class Tokens:
    """The configured operators' token digests, and what was wrong with the configuration."""

    entries: list[tuple[str, bytes]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def operator_for(self, presented: str) -> str | None:
        """The operator whose token ``presented`` is, or None; the same work whatever matches."""
        got = _digest(presented)
        found = None
        for name, digest in self.entries:
            if hmac.compare_digest(digest, got) and found is None:
                found = name
        return found


def load_tokens(tokens_file: str | None, environ: dict[str, str] | None = None) -> Tokens:
    environ = os.environ if environ is None else environ
    tokens = Tokens()
    secret = environ.get(TOKEN_ENV, "").strip()
    if secret:
        _add(tokens, ENV_OPERATOR, secret, TOKEN_ENV)
    if tokens_file:
        try:
            text = Path(tokens_file).read_text(encoding="utf-8")
        except OSError as exc:
            tokens.problems.append(f"cannot read the tokens file {tokens_file}: {exc.strerror or exc}")
            return tokens
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, sep, token = line.partition(":")
            if not sep:
                name, token = ENV_OPERATOR, line
            _add(tokens, name.strip(), token.strip(), f"{tokens_file} line {n}")
    return tokens


def _add(tokens: Tokens, name: str, token: str, where: str) -> None:
    if not name:
        tokens.problems.append(f"{where}: no operator name before the colon")
    elif len(token) < MIN_TOKEN_LENGTH:
        tokens.problems.append(f"{where}: the token of {name!r} is shorter than {MIN_TOKEN_LENGTH} characters: ignored")
    else:
        tokens.entries.append((name, _digest(token)))
