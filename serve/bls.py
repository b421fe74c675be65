"""BLS (business logic scripting) calls from a Python-backend model to other served models.

A Python model calls a served model with ``pb_utils.InferenceRequest(...).async_exec()``
inside an ``async def execute``: the request goes through Triton like any client's (the
callee's dynamic batcher groups it with other clients' requests, its response cache
answers it when it holds the response), and awaiting several at once with
``asyncio.gather`` keeps them all in flight together (a plain ``exec()`` loop would send one
at a time; see the project's notes on local Triton).

Triton 2.51 loses the callee's error code on the way back to the BLS caller: every error
arrives as INTERNAL (triton-inference-server/server#7804, open; seen here with
``clip_preprocess``'s INVALID_ARG). So the caller says which errors are the request's fault
by their message (tritonlens' own models name the refused item, "image 3 of the request:
..."), and those become INVALID_ARG again.

``pb_utils`` is Triton's ``triton_python_backend_utils`` module, importable only inside the
stub, so it is passed in (as in ``serve.errors``).
"""

from __future__ import annotations

import re

import numpy as np

from tritonlens.serve.errors import RequestError


class ServedModelError(RuntimeError):
    """A served model failed a BLS request for a reason that is not the caller's input."""


async def infer(pb_utils, model: str, inputs: dict[str, np.ndarray], output: str,
                refused: re.Pattern | None = None) -> np.ndarray:
    """Send one request to the served ``model`` and return its ``output``.

    Args:
        pb_utils: Triton's ``triton_python_backend_utils`` module.
        model: the served model's name (its latest version is used).
        inputs: input name -> numpy array, with the batch axis when the model has one.
        output: the output to request and return.
        refused: what the messages of ``model``'s refusals of bad input contain (searched
            for), since the error code does not come back (see the module docstring).

    Raises:
        RequestError: the model refused the request as invalid (its error code INVALID_ARG,
            or its message matches ``refused``), with its message: the caller's request was
            wrong, and says so (INVALID_ARG again).
        ServedModelError: any other failure, with the model's name and message.
    """
    request = pb_utils.InferenceRequest(
        model_name=model, requested_output_names=[output],
        inputs=[pb_utils.Tensor(name, array) for name, array in inputs.items()])
    response = await request.async_exec()
    if response.has_error():
        error = response.error()
        if (error.code() == pb_utils.TritonError.INVALID_ARG
                or (refused is not None and refused.search(error.message()))):
            raise RequestError(error.message())
        raise ServedModelError(f"{model}: {error.message()}")
    return pb_utils.get_output_tensor_by_name(response, output).as_numpy()
