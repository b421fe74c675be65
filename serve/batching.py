"""Request handling shared by tritonlens' Python-based backends (onnxruntime, pytorch).

Triton's dynamic batcher hands a Python model several requests in one ``execute()`` call.
The native backends concatenate them along the batch axis and run once; these helpers do
the same with plain numpy, so they can be unit-tested without a server:

* :func:`check_input` checks one input against its config entry
  (``tritonlens.serve.model_config.TensorSpec``);
* :func:`run_batched` groups requests whose non-batch shapes agree, runs each group as one
  batch, splits the outputs back per request, and turns a failure into a per-request
  error so one bad request never fails its neighbours.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from tritonlens.serve.errors import error_response
# read_model_config is imported from here by the backends' model.py files too.
from tritonlens.serve.model_config import ModelSpec, TensorSpec, read_model_config  # noqa: F401


def check_input(spec: TensorSpec, array: np.ndarray, batched: bool) -> str | None:
    """Why ``array`` does not fit ``spec`` (dtype, rank, fixed dims), or None if it fits.

    Triton validates requests against the config before they reach a model; this is the
    backend's own guard, so a mismatch is reported, never computed on.
    """
    if array.dtype != np.dtype(spec.dtype):
        return (f"input '{spec.name}' has dtype {array.dtype}, expected "
                f"{np.dtype(spec.dtype)}")
    shape = array.shape[1:] if batched else array.shape
    if len(shape) != len(spec.dims) or any(d != -1 and d != s for d, s in zip(spec.dims, shape)):
        expected = ("[batch, " if batched else "[") + ", ".join(map(str, spec.dims)) + "]"
        return f"input '{spec.name}' has shape {list(array.shape)}, expected {expected}"
    return None


def run_batched(
    requests: list[dict[str, np.ndarray]],
    run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
    batched: bool = True,
) -> list[dict[str, np.ndarray] | Exception]:
    """Run ``run`` over requests, concatenated along axis 0 where their shapes allow.

    Args:
        requests: per request, input name -> array of shape ``[b_i, *dims]``.
        run: computes outputs (name -> ``[sum b_i, *dims]``) from concatenated inputs.
        batched: False for models with ``max_batch_size: 0`` (run each request alone).

    Returns:
        Per request, in order: its outputs (name -> ``[b_i, *dims]``), or the exception that
        running it raised (the caller turns it into that request's error response). When a
        group of several requests fails, each is run again alone, so one bad request (say,
        token ids out of the vocabulary) fails alone and its neighbours get their outputs.
    """
    results: list[dict[str, np.ndarray] | Exception] = [None] * len(requests)  # type: ignore
    groups: dict[tuple, list[int]] = {}
    for i, inputs in enumerate(requests):
        if batched:
            key = tuple((name, a.shape[1:], a.dtype.str) for name, a in sorted(inputs.items()))
        else:
            key = ("request", i)
        groups.setdefault(key, []).append(i)

    def run_alone(i: int) -> None:
        try:
            results[i] = run(requests[i])
        except Exception as err:  # noqa: BLE001 - reported per request, never raised
            results[i] = err

    for members in groups.values():
        if len(members) == 1:
            run_alone(members[0])
            continue
        try:
            names = requests[members[0]].keys()
            stacked = {n: np.concatenate([requests[i][n] for i in members]) for n in names}
            outputs = run(stacked)
        except Exception:  # noqa: BLE001 - find the request(s) at fault
            for i in members:
                run_alone(i)
            continue
        start = 0
        for i in members:
            b = next(iter(requests[i].values())).shape[0]
            results[i] = {n: v[start:start + b] for n, v in outputs.items()}
            start += b
    return results


def execute_requests(pb_utils, spec: ModelSpec, requests, run, engine: str,
                     caller_errors: tuple[type[BaseException], ...] = (ValueError,)):
    """The whole ``execute()`` of a Python-based backend: one response per request, in order.

    Reads each request's inputs (checking them with :func:`check_input`), runs the valid ones
    through :func:`run_batched`, and answers every request either with its outputs or with a
    ``TritonError`` that names the model and the problem: a missing input or a wrong dtype or
    shape is the caller's mistake (INVALID_ARG: gRPC INVALID_ARGUMENT, HTTP 400); a failure of
    the engine itself is INTERNAL (gRPC INTERNAL, HTTP 500), unless the engine raised one of
    ``caller_errors`` (the engine's own "invalid argument" for input values it cannot take,
    e.g. onnxruntime's ``InvalidArgument`` for token ids outside the vocabulary): then it is
    INVALID_ARG too. ``pb_utils`` is Triton's ``triton_python_backend_utils`` module
    (importable only inside the stub, hence passed in).
    """
    batched = spec.max_batch_size > 0
    per_request, problems = [], []
    for request in requests:
        inputs, problem = {}, None
        for tensor_spec in spec.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, tensor_spec.name)
            if tensor is None:
                if not tensor_spec.optional:
                    problem = problem or f"missing input '{tensor_spec.name}'"
                continue
            inputs[tensor_spec.name] = tensor.as_numpy()
            problem = problem or check_input(tensor_spec, inputs[tensor_spec.name], batched)
        per_request.append(inputs)
        problems.append(problem)
    runnable = [i for i, p in enumerate(problems) if p is None]
    outcome = dict(zip(runnable, run_batched([per_request[i] for i in runnable], run, batched)))
    responses = []
    for i, problem in enumerate(problems):
        result = outcome.get(i)
        if problem is not None:
            responses.append(error_response(pb_utils, f"{spec.name}: {problem}"))
            continue
        if isinstance(result, Exception):
            caller = isinstance(result, caller_errors)
            what = f"{engine} refused the input" if caller else f"{engine} failed"
            responses.append(error_response(pb_utils, f"{spec.name}: {what}: {result}",
                                            invalid_argument=caller))
            continue
        responses.append(pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor(o.name, np.ascontiguousarray(result[o.name])) for o in spec.outputs]))
    return responses
