"""One error hierarchy, named after Bedrock's error shapes.

Code anywhere below the API raises these; ``outcrop.api.app`` turns them into the wire
response (JSON body, ``x-amzn-ErrorType`` header, HTTP status) in exactly one place, and
``outcrop.api.runtime`` into ``:message-type=exception`` frames once a stream has started.
"""

from __future__ import annotations


class OutcropError(Exception):
    """Base of every error that reaches a client. ``shape`` is the botocore error shape."""

    shape = "InternalServerException"
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def stream_shape(self) -> str:
        """The lowerCamel member name used for ``:exception-type`` in event streams."""
        return self.shape[0].lower() + self.shape[1:]


class ValidationError(OutcropError):
    shape = "ValidationException"
    status = 400


class AccessDeniedError(OutcropError):
    shape = "AccessDeniedException"
    status = 403


class UnrecognizedClientError(OutcropError):
    """An access key that is not known (AWS: UnrecognizedClientException, 403)."""

    shape = "UnrecognizedClientException"
    status = 403


class SignatureMismatchError(OutcropError):
    shape = "InvalidSignatureException"
    status = 403


class ResourceNotFoundError(OutcropError):
    shape = "ResourceNotFoundException"
    status = 404


class ConflictError(OutcropError):
    shape = "ConflictException"
    status = 400


class TooManyTagsError(OutcropError):
    shape = "TooManyTagsException"
    status = 400


class ServiceQuotaExceededError(OutcropError):
    shape = "ServiceQuotaExceededException"
    status = 400  # as the bedrock and bedrock-runtime models declare it


class ThrottlingError(OutcropError):
    shape = "ThrottlingException"
    status = 429


class ModelNotReadyError(OutcropError):
    shape = "ModelNotReadyException"
    status = 429


class ModelTimeoutError(OutcropError):
    shape = "ModelTimeoutException"
    status = 408


class ModelError(OutcropError):
    shape = "ModelErrorException"
    status = 424


class ServiceUnavailableError(OutcropError):
    shape = "ServiceUnavailableException"
    status = 503


class InternalServerError(OutcropError):
    shape = "InternalServerException"
    status = 500


class UnknownOperationError(OutcropError):
    shape = "UnknownOperationException"
    status = 404


def with_service_status(error: OutcropError, statuses: dict[str, int]) -> OutcropError:
    """``error`` with the HTTP status its shape has in one service's botocore model.

    One class per shape, but the status belongs to the service: ConflictException is 400
    in bedrock and 409 in bedrock-agent; ServiceQuotaExceededException 400 or 402.
    """
    status = statuses.get(error.shape)
    if status is not None:
        error.status = status
    return error
