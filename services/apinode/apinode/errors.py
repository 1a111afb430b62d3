"""Domain errors: each carries its HTTP status and Dataiku-style errorType; one handler renders them."""

from __future__ import annotations


class ApiError(Exception):
    """An error a caller sees as ``{"errorType", "message", "detailedMessage"}``."""

    status = 500
    error_type = "InternalError"
    # The Dataiku-style code a prediction answers ``ignored: true`` with, for a record-level problem.
    ignore_reason = "ERROR"
    # True when the endpoint's policy answers the record ignored rather than failing the call.
    record_level = False

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail or message

    def body(self) -> dict[str, str]:
        return {"errorType": self.error_type, "message": self.message, "detailedMessage": self.detail}


class MalformedRequest(ApiError):
    """The body is not valid JSON or not the expected envelope."""

    status = 400
    error_type = "MalformedRequest"


class InvalidFeatures(ApiError):
    """A feature is unknown, mistyped or out of its declared shape."""

    status = 400
    error_type = "InvalidFeatures"


class MissingLookupKey(ApiError):
    """The lookup or enrichment key is absent and the policy says fail."""

    status = 400
    error_type = "MissingLookupKey"
    ignore_reason = "MISSING_LOOKUP_KEY"


class MissingFeatures(ApiError):
    """After enrichment some model inputs are still missing."""

    status = 400
    error_type = "MissingFeatures"
    ignore_reason = "MISSING_FEATURES"


class Unauthorized(ApiError):
    """No API key was sent."""

    status = 401
    error_type = "Unauthorized"


class Forbidden(ApiError):
    """The API key sent is not one of this service's keys."""

    status = 403
    error_type = "Forbidden"


class NotFound(ApiError):
    """Unknown service, endpoint or route."""

    status = 404
    error_type = "NotFound"


class RecordNotFound(ApiError):
    """The lookup key matched no row and the policy says fail."""

    status = 404
    error_type = "RecordNotFound"
    ignore_reason = "NO_LOOKUP_MATCH"


class MethodNotAllowed(ApiError):
    """The route exists but not with this HTTP method."""

    status = 405
    error_type = "MethodNotAllowed"


class SeveralMatches(ApiError):
    """The lookup key matched several rows and the policy says fail."""

    status = 409
    error_type = "SeveralMatches"
    ignore_reason = "MULTIPLE_LOOKUP_MATCHES"


class PayloadTooLarge(ApiError):
    """Body bigger than the configured limit, or a batch with too many items."""

    status = 413
    error_type = "PayloadTooLarge"


class UnsupportedMediaType(ApiError):
    """The body is declared as something other than JSON."""

    status = 415
    error_type = "UnsupportedMediaType"


class RequestTimeout(ApiError):
    """The client did not send its body within the configured time."""

    status = 408
    error_type = "RequestTimeout"


class SourceUnavailable(ApiError):
    """A data source, the database or the features service, cannot answer now."""

    status = 503
    error_type = "SourceUnavailable"


class ServerBusy(ApiError):
    """More connections than the configured limit."""

    status = 503
    error_type = "ServerBusy"


class NotReady(ApiError):
    """Data or model still loading, or the server is draining."""

    status = 503
    error_type = "NotReady"
