"""Open Inference Protocol (KServe V2) over REST: request parsing, response encoding and the metadata
documents, as pure functions of bytes and arrays (the HTTP routes are in service/http.py).

Specification: kserve/open-inference-protocol (REST), with Triton's extensions that tritonclient and
Triton's tools use: binary tensor data (`Inference-Header-Content-Length`, `binary_data_size`,
`binary_data` / `binary_data_output`), model configuration and statistics.

Structure is validated strictly: one FP32 input of exactly the model's shape, 1 to `max_items`
rows/images, byte counts that add up; anything else is a ProtocolError (400, `{"error": ...}`) that
names the field. Values are not (as Triton): the model computes on whatever FP32 values it is sent,
NaN and infinities included (binary data; JSON data carries JSON numbers only). A non-finite output
value is written as `null` in a JSON answer (so that it stays valid JSON; tritonclient reads it back
as NaN) and as its IEEE bits in binary data. The JSON endpoints keep their value ranges.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import orjson
from pydantic import TypeAdapter, ValidationError

from service.codecs import NOT_NUMBERS
from service.schemas import FiniteFloat

DATATYPE = "FP32"  # every tensor these models take or give
WIRE_DTYPE = np.dtype("<f4")  # binary tensor data: little-endian, row-major, no padding
HEADER_LENGTH = "Inference-Header-Content-Length"
EXTENSIONS = ("binary_tensor_data", "model_configuration", "statistics")

_numbers = TypeAdapter(list[FiniteFloat])


class ProtocolError(Exception):
    """A request the protocol or the model's contract does not allow; `status` is the HTTP answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple[int, ...]  # without the batch axis

    def metadata(self) -> dict:
        return {"name": self.name, "datatype": DATATYPE, "shape": [-1, *self.shape]}

    def config(self) -> dict:
        return {"name": self.name, "data_type": f"TYPE_{DATATYPE}", "dims": list(self.shape)}


@dataclass(frozen=True)
class ModelInterface:
    """What one model speaks over V2: its input, its outputs (each computed from the model's output
    rows, once per request: `compute`) and how many items a request may carry."""

    name: str
    input: Tensor
    outputs: tuple[Tensor, ...]
    max_items: int
    compute: dict[str, Callable[[np.ndarray], np.ndarray]] = field(default_factory=dict, compare=False)

    def output(self, name: str) -> Tensor | None:
        return next((t for t in self.outputs if t.name == name), None)

    def output_values(self, rows: np.ndarray, names) -> dict[str, np.ndarray]:
        """The asked outputs from the model's output rows of one request."""
        return {name: self.compute.get(name, _identity)(rows) for name in names}


def _identity(rows: np.ndarray) -> np.ndarray:
    return rows


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    array: np.ndarray  # (n, *input.shape), float32
    outputs: tuple[tuple[str, bool], ...]  # (output name, as binary data), in the order asked


def _json_object(text: bytes, what: str) -> dict:
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ProtocolError(f"{what} must be a JSON object")
    return doc


def _flatten(data, depth: int = 0) -> list:
    """Row-major elements of `data` (flat, or nested as the tensor's shape, as Triton accepts)."""
    if not isinstance(data, list):
        return [data]
    if depth > 8:
        raise ProtocolError("data is nested deeper than any tensor of these models")
    if data and isinstance(data[0], list):
        return [v for item in data for v in _flatten(item, depth + 1)]
    return data


def _bool_parameter(parameters, key: str, where: str) -> bool:
    value = parameters.get(key, False)
    if not isinstance(value, bool):
        raise ProtocolError(f"{where}.parameters.{key} must be true or false")
    return value


def parse_infer(body: bytes, header_length: str | None, model: ModelInterface) -> InferRequest:
    """An inference request (JSON, or a JSON header followed by binary tensor data)."""
    if header_length is None:
        head, binary = body, b""
    else:
        if not header_length.strip().isdigit() or not 0 < int(header_length) <= len(body):
            raise ProtocolError(
                f"{HEADER_LENGTH} is {header_length!r}; it must be the JSON header's size in bytes, "
                f"between 1 and the body's {len(body)} bytes"
            )
        head, binary = body[: int(header_length)], memoryview(body)[int(header_length) :]
    doc = _json_object(head, "the inference request")
    literals = any(literal in head for literal in NOT_NUMBERS)
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError("id must be a string")
    parameters = doc.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ProtocolError("parameters must be an object")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise ProtocolError(f"inputs must be a list of one tensor, {model.input.name!r}")
    array, used = _input(inputs[0], binary, model, literals)
    if used != len(binary):
        raise ProtocolError(
            f"the body has {len(binary) - used} bytes of binary data that no binary_data_size accounts for"
        )
    return InferRequest(request_id, array, _requested_outputs(doc, parameters, model))


def check_input(name, datatype, shape, model: ModelInterface, where: str = "inputs[0]") -> int:
    """The input's name, datatype and shape (1 to max_items rows of the model's shape), as every
    protocol has them (REST JSON, gRPC); returns its number of values (ProtocolError otherwise)."""
    spec = model.input
    if name != spec.name:
        raise ProtocolError(f"{where}.name is {name!r}; {model.name} takes {spec.name!r}")
    if datatype != DATATYPE:
        raise ProtocolError(f"{where}.datatype is {datatype!r}; {spec.name} is {DATATYPE}")
    if (
        not isinstance(shape, list)
        or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
        or tuple(shape[1:]) != spec.shape
        or not shape
        or shape[0] < 1
    ):
        raise ProtocolError(f"{where}.shape is {shape!r}; {spec.name} is {[-1, *spec.shape]} with -1 >= 1")
    if shape[0] > model.max_items:
        raise ProtocolError(f"{where}.shape[0] is {shape[0]}; a request may carry at most {model.max_items}")
    return math.prod(shape)


def _input(
    tensor: dict, binary: memoryview | bytes, model: ModelInterface, literals: bool = True
) -> tuple[np.ndarray, int]:
    """(the input array, bytes of binary data it used). `literals`: the JSON header has a true, false
    or null somewhere (then JSON data is checked for booleans, which NumPy would take as numbers)."""
    where = "inputs[0]"
    shape = tensor.get("shape")
    count = check_input(tensor.get("name"), tensor.get("datatype"), shape, model, where)
    parameters = tensor.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ProtocolError(f"{where}.parameters must be an object")
    if "binary_data_size" in parameters:
        size = parameters["binary_data_size"]
        if "data" in tensor:
            raise ProtocolError(f"{where} has both data and parameters.binary_data_size")
        if size != count * WIRE_DTYPE.itemsize or isinstance(size, bool):
            raise ProtocolError(
                f"{where}.parameters.binary_data_size is {size!r}; shape {shape} of {DATATYPE} is "
                f"{count * WIRE_DTYPE.itemsize} bytes"
            )
        if size > len(binary):
            raise ProtocolError(f"{where} declares {size} bytes of binary data; the body has {len(binary)}")
        array = np.frombuffer(binary, dtype=WIRE_DTYPE, count=count).astype(np.float32).reshape(shape)
        used = size
    else:
        if "data" not in tensor:
            raise ProtocolError(f"{where} has neither data nor parameters.binary_data_size")
        values = _numbers_of(_flatten(tensor["data"]), where, literals)
        if len(values) != count:
            raise ProtocolError(f"{where}.data has {len(values)} numbers; shape {shape} needs {count}")
        array = values.astype(np.float32).reshape(shape)
        used = 0
    return array, used


def _numbers_of(flat: list, where: str, literals: bool) -> np.ndarray:
    """JSON numbers as a float64 array (NumPy's conversion, ~30x pydantic's per number); anything
    else (strings, booleans, nulls, objects) is named by pydantic's strict number type."""
    try:
        array = np.array(flat)
    except (ValueError, TypeError):
        array = None
    if (
        array is not None
        and array.ndim == 1
        and array.dtype.kind in "fi"
        and not (literals and any(type(v) is bool for v in flat))
    ):
        return array.astype(np.float64)
    try:
        values = _numbers.validate_python(flat)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ProtocolError(
            f"{where}.data[{first['loc'][0]}]: {first['msg']} (data is the tensor's numbers, row-major)"
        ) from None
    return np.asarray(values, dtype=np.float64)


def _requested_outputs(doc: dict, parameters: dict, model: ModelInterface) -> tuple[tuple[str, bool], ...]:
    default_binary = _bool_parameter(parameters, "binary_data_output", "the request")
    asked = doc.get("outputs")
    if asked is None:
        return tuple((t.name, default_binary) for t in model.outputs)
    if not isinstance(asked, list) or not asked:
        raise ProtocolError("outputs must be a non-empty list of {name, parameters}")
    chosen = []
    for i, out in enumerate(asked):
        where = f"outputs[{i}]"
        if not isinstance(out, dict) or model.output(out.get("name")) is None:
            names = [t.name for t in model.outputs]
            raise ProtocolError(f"{where}.name must be one of {names}")
        params = out.get("parameters") or {}
        if not isinstance(params, dict):
            raise ProtocolError(f"{where}.parameters must be an object")
        if params.get("classification"):
            raise ProtocolError(
                f"{where}.parameters.classification: the classification extension is not supported"
            )
        binary = _bool_parameter(params, "binary_data", where) if "binary_data" in params else default_binary
        chosen.append((out["name"], binary))
    return tuple(chosen)


def encode_infer(
    model: ModelInterface, version: str, request: InferRequest, values: dict[str, np.ndarray]
) -> tuple[bytes, dict[str, str]]:
    """The response body and its headers: JSON, or a JSON header followed by binary tensor data when
    any output was asked for as binary."""
    outputs, blobs = [], []
    for name, binary in request.outputs:
        array = np.ascontiguousarray(values[name], dtype=WIRE_DTYPE)
        tensor = {"name": name, "datatype": DATATYPE, "shape": list(array.shape)}
        if binary:
            blobs.append(array.tobytes())
            tensor["parameters"] = {"binary_data_size": len(blobs[-1])}
        else:
            tensor["data"] = array.ravel()  # float32: orjson writes each number's shortest exact form
        outputs.append(tensor)
    doc = {"model_name": model.name, "model_version": version, "outputs": outputs}
    if request.id is not None:
        doc["id"] = request.id
    head = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return head, {"Content-Type": "application/json"}
    headers = {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(head))}
    return b"".join([head, *blobs]), headers


def server_metadata(name: str, version: str) -> dict:
    return {"name": name, "version": version, "extensions": list(EXTENSIONS)}


def model_metadata(model: ModelInterface, version: str, platform: str) -> dict:
    return {
        "name": model.name,
        "versions": [version],
        "platform": platform,
        "inputs": [model.input.metadata()],
        "outputs": [t.metadata() for t in model.outputs],
    }


def model_config(
    model: ModelInterface,
    version: str,
    triton: tuple[str, str],
    device: str,
    workers: int,
    batch_items: int,
    deadline_ms: int,
    tag: str = "",
    queue_delay_us: int = 0,
) -> dict:
    """Triton's model configuration of what is served: `max_batch_size` is the most items one request
    may carry, `preferred_batch_size` the batcher's batch, `max_queue_delay_microseconds` how long a
    short batch waits (MODELS__<NAME>__QUEUE_DELAY_US), the queue timeout its shedding deadline;
    `parameters.bentoml_tag` the BentoML tag behind the integer version."""
    platform, runtime = triton  # Triton's platform and backend names of the format served
    return {
        "name": model.name,
        "platform": platform,
        "backend": runtime,
        "version_policy": {"specific": {"versions": [version]}},
        "max_batch_size": model.max_items,
        "input": [model.input.config()],
        "output": [t.config() for t in model.outputs],
        "dynamic_batching": {
            "preferred_batch_size": [batch_items],
            "max_queue_delay_microseconds": queue_delay_us,
            "default_queue_policy": {
                "timeout_action": "REJECT",
                "default_timeout_microseconds": deadline_ms * 1000,
            },
        },
        "instance_group": [
            {"name": model.name, "kind": "KIND_GPU" if device == "cuda" else "KIND_CPU", "count": workers}
        ],
        "parameters": {"bentoml_tag": {"string_value": tag}},
    }
