"""Per-request error responses for the Python-backend models, with the right status code.

Triton maps a Python model's ``TritonError`` code onto the protocol's status: the default
(``INTERNAL``) reaches clients as gRPC INTERNAL / HTTP 500, which tells a caller the server
broke. Bad input is the caller's fault and must say so: ``INVALID_ARG`` becomes gRPC
INVALID_ARGUMENT / HTTP 400 (Triton's ``TRITONSERVER_ERROR_INVALID_ARG``; the Python
backend's ``TritonError(message, code)`` has taken a code since release 23.x and 2.51 has it).

``pb_utils`` is Triton's ``triton_python_backend_utils`` module; it is importable only inside
the stub, so it is passed in (the functions stay importable and testable outside a server).
"""

from __future__ import annotations


class RequestError(ValueError):
    """The request itself is wrong (shape, dtype, size, content): the caller must fix it.

    Raised by the importable request-handling code; the model turns it into an
    ``INVALID_ARG`` response for that one request.
    """


def error_response(pb_utils, message: str, *, invalid_argument: bool = True):
    """An ``InferenceResponse`` that fails one request with ``message``.

    Args:
        pb_utils: Triton's ``triton_python_backend_utils`` module.
        message: what went wrong, naming the model and the input.
        invalid_argument: True (default) for a caller's mistake (gRPC INVALID_ARGUMENT,
            HTTP 400); False for a server-side failure (gRPC INTERNAL, HTTP 500).
    """
    code = pb_utils.TritonError.INVALID_ARG if invalid_argument else pb_utils.TritonError.INTERNAL
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))


def response_for_exception(pb_utils, prefix: str, err: BaseException):
    """The error response for an exception raised while handling one request.

    ``RequestError`` (and its subclasses) and plain ``ValueError`` are the caller's fault
    (INVALID_ARG); anything else is reported as an internal error with its type name.
    """
    if isinstance(err, ValueError):
        return error_response(pb_utils, f"{prefix}: {err}")
    return error_response(pb_utils, f"{prefix}: {type(err).__name__}: {err}", invalid_argument=False)


def input_array(pb_utils, request, name: str):
    """The numpy array of ``request``'s input ``name``, or None when the request omits it
    (an optional input)."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def respond_each(pb_utils, requests, model: str, handle) -> list:
    """What a Python-backend model's ``execute`` returns: one response per request, in order.

    ``handle(request)`` returns the request's outputs (output name -> numpy array); an
    exception it raises fails only that request (:func:`response_for_exception` with
    ``model`` as the prefix: a ``ValueError`` / ``RequestError`` is INVALID_ARG, anything
    else INTERNAL), and the other requests of the batch are answered.
    """
    responses = []
    for request in requests:
        try:
            outputs = handle(request)
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor(name, array) for name, array in outputs.items()]))
        except Exception as err:  # one bad request must not fail the others
            responses.append(response_for_exception(pb_utils, model, err))
    return responses
