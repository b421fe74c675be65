"""Triton's model config as a Python-backend model reads it in ``initialize``.

Every ``model.py`` of tritonlens (the hand-written models in ``model_repository/`` and the
Python-based ``onnxruntime`` / ``pytorch`` backends) parses ``args["model_config"]`` (the
model's ``config.pbtxt`` as JSON, Triton's ``model_config`` message) with
:func:`read_model_config` and reads its string ``parameters`` through :class:`ModelSpec`'s
typed getters, which name the model and the parameter when one is missing or malformed.
Plain Python and numpy: importable and testable without a server.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

# Triton data types -> numpy (the subset the project's models use, plus common ones).
TRITON_TO_NUMPY = {
    "TYPE_BOOL": np.bool_, "TYPE_UINT8": np.uint8, "TYPE_UINT16": np.uint16,
    "TYPE_UINT32": np.uint32, "TYPE_UINT64": np.uint64, "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16, "TYPE_INT32": np.int32, "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16, "TYPE_FP32": np.float32, "TYPE_FP64": np.float64,
    "TYPE_STRING": np.object_,
}

_REQUIRED = object()


class ConfigError(ValueError):
    """A config parameter the model needs is missing or not of its type (the model fails to
    load with this message; it is the exporter's or the repository editor's mistake)."""


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a model config: name, numpy dtype, dims without batch."""

    name: str
    dtype: type
    dims: tuple[int, ...]
    optional: bool = False


@dataclass
class ModelSpec:
    """The parts of a Triton model config that tritonlens' Python models act on.

    Attributes:
        name: the model's name.
        max_batch_size: 0 for a model without a batch axis.
        inputs / outputs: the config's tensors, in config order.
        parameters: the config's ``parameters`` (key -> ``string_value``).
        default_model_filename: the config's, "" when not set.
    """

    name: str
    max_batch_size: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    parameters: dict[str, str] = field(default_factory=dict)
    default_model_filename: str = ""

    def text(self, key: str, default=_REQUIRED) -> str:
        """The parameter ``key``, or ``default`` when the config has none.

        Raises:
            ConfigError: no such parameter and no default.
        """
        if key in self.parameters:
            return self.parameters[key]
        if default is _REQUIRED:
            raise ConfigError(f"{self.name}: config parameter {key!r} is missing")
        return default

    def _convert(self, key: str, default, kind: type, what: str):
        if key not in self.parameters:
            return self.text(key, default)  # the default, or ConfigError when required
        value = self.parameters[key]
        try:
            return kind(value)
        except ValueError:
            raise ConfigError(f"{self.name}: config parameter {key!r} must be {what}, "
                              f"not {value!r}") from None

    def integer(self, key: str, default=_REQUIRED) -> int:
        """The parameter ``key`` as an int (``default`` when absent; ConfigError if not an int)."""
        return self._convert(key, default, int, "an integer")

    def number(self, key: str, default=_REQUIRED) -> float:
        """The parameter ``key`` as a float (``default`` when absent; ConfigError if not a number)."""
        return self._convert(key, default, float, "a number")

    def flag(self, key: str, default: bool) -> bool:
        """The parameter ``key`` as a bool: "true" / "false", any case (``default`` when absent).

        Raises:
            ConfigError: any other value.
        """
        value = self.text(key, "").strip().lower()
        if not value:
            return default
        if value not in ("true", "false"):
            raise ConfigError(f"{self.name}: config parameter {key!r} must be true or false, "
                              f"not {self.parameters[key]!r}")
        return value == "true"

    def numbers(self, key: str) -> tuple[float, ...]:
        """The parameter ``key`` as comma-separated floats (``"0.485,0.456,0.406"``).

        Raises:
            ConfigError: missing, or an item is not a number.
        """
        value = self.text(key)
        try:
            return tuple(float(item) for item in value.split(","))
        except ValueError:
            raise ConfigError(f"{self.name}: config parameter {key!r} must be comma-separated "
                              f"numbers, not {value!r}") from None


def read_model_config(model_config_json: str) -> ModelSpec:
    """Parse ``args["model_config"]`` (Triton's model config as JSON) into a ModelSpec."""
    cfg = json.loads(model_config_json)

    def specs(entries):
        return [TensorSpec(e["name"], TRITON_TO_NUMPY[e["data_type"]],
                           tuple(int(d) for d in e.get("dims", [])),
                           bool(e.get("optional", False)))
                for e in entries]

    return ModelSpec(
        name=cfg["name"],
        max_batch_size=int(cfg.get("max_batch_size", 0)),
        inputs=specs(cfg.get("input", [])),
        outputs=specs(cfg.get("output", [])),
        parameters={k: v.get("string_value", "") for k, v in cfg.get("parameters", {}).items()},
        default_model_filename=cfg.get("default_model_filename", ""),
    )
