"""API keys: HTTP Basic username (blank password, as Dataiku clients send) or Bearer; constant time."""

from __future__ import annotations

import base64
import binascii
import hmac

from .audit import key_id
from .errors import Forbidden, Unauthorized


class ApiKeys:
    """The keys one service accepts."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        self._keys = tuple(key.encode() for key in keys)
        self._ids = tuple(key_id(key) for key in keys)  # what query records show instead of the key
        # A client sends the same header on every call: remember the ones already accepted.
        self._accepted: dict[bytes, str] = {}

    def check(self, header: bytes | None) -> str:
        """The one-way id of the key the header carries, or the 401/403 to answer."""
        if not header:
            raise Unauthorized(
                "missing API key", "send the API key as the HTTP Basic username or as a Bearer token"
            )
        accepted = self._accepted.get(header)
        if accepted is not None:
            return accepted
        scheme, _, credentials = header.partition(b" ")
        scheme = scheme.lower()
        if scheme == b"bearer":
            presented = credentials.strip()
        elif scheme == b"basic":
            try:
                presented = base64.b64decode(credentials.strip(), validate=True).partition(b":")[0]
            except (binascii.Error, ValueError):
                raise Unauthorized(
                    "malformed Basic credentials", "the Authorization header is not valid base64"
                ) from None
        else:
            raise Unauthorized(
                "unsupported authorization scheme", "use HTTP Basic (key as username) or Bearer"
            )
        matched = None
        for key, identity in zip(self._keys, self._ids):
            if hmac.compare_digest(presented, key):
                matched = identity
        if matched is None:
            raise Forbidden("invalid API key", "the API key is not valid for this service")
        if len(self._accepted) < 64:
            self._accepted[header] = matched
        return matched
