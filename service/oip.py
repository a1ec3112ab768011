"""The Open Inference Protocol (KServe V2) as Triton speaks it: its FP32 tensors for every transport
(REST JSON and binary data, gRPC raw and typed contents), the REST body's parsing and encoding, and
the metadata documents, as pure functions of bytes and arrays. The HTTP routes are service/http.py's,
the gRPC ones service/oip_grpc.py's; both decode into the data plane's one InferRequest.

Specification: kserve/open-inference-protocol (REST), with Triton's extensions that tritonclient and
Triton's tools use: binary tensor data (`Inference-Header-Content-Length`, `binary_data_size`,
`binary_data` / `binary_data_output`), model configuration and statistics.

Structure is validated strictly: one FP32 input of exactly the model's shape, 1 to `max_items`
rows/images, byte counts that add up; anything else is refused as INVALID (400, `{"error": ...}`;
gRPC's INVALID_ARGUMENT) naming the field. Values are not (as Triton): the model computes on whatever
FP32 values it is sent, NaN and infinities included (binary data; JSON data carries JSON numbers
only). A non-finite output value is written as `null` in a JSON answer (so that it stays valid JSON;
tritonclient reads it back as NaN) and as its IEEE bits in binary data. The JSON endpoints keep their
value ranges.
"""

from __future__ import annotations

import math

import numpy as np
import orjson
from pydantic import TypeAdapter, ValidationError

from service.codecs import NOT_NUMBERS
from service.errors import invalid
from service.interface import InferRequest, ModelInterface, Tensor
from service.schemas import FiniteFloat

DATATYPE = "FP32"  # every tensor these models take or give
WIRE_DTYPE = np.dtype("<f4")  # binary tensor data: little-endian, row-major, no padding
HEADER_LENGTH = "Inference-Header-Content-Length"
EXTENSIONS = ("binary_tensor_data", "model_configuration", "statistics")

_numbers = TypeAdapter(list[FiniteFloat])


def tensor_metadata(tensor: Tensor) -> dict:
    return {"name": tensor.name, "datatype": DATATYPE, "shape": [-1, *tensor.shape]}


def tensor_config(tensor: Tensor) -> dict:
    return {"name": tensor.name, "data_type": f"TYPE_{DATATYPE}", "dims": list(tensor.shape)}


# --- FP32 tensors, for every transport (REST JSON and binary, gRPC raw and typed contents)


def check_input(name, datatype, shape, model: ModelInterface, where: str = "inputs[0]") -> int:
    """The input's name, datatype and shape (1 to max_items rows of the model's shape), as every
    protocol has them (REST JSON, gRPC); returns its number of values (Refused INVALID otherwise)."""
    spec = model.input
    if name != spec.name:
        raise invalid(f"{where}.name is {name!r}; {model.name} takes {spec.name!r}")
    if datatype != DATATYPE:
        raise invalid(f"{where}.datatype is {datatype!r}; {spec.name} is {DATATYPE}")
    if (
        not isinstance(shape, list)
        or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
        or tuple(shape[1:]) != spec.shape
        or not shape
        or shape[0] < 1
    ):
        raise invalid(f"{where}.shape is {shape!r}; {spec.name} is {[-1, *spec.shape]} with -1 >= 1")
    if shape[0] > model.max_items:
        raise invalid(f"{where}.shape[0] is {shape[0]}; a request may carry at most {model.max_items}")
    return math.prod(shape)


def byte_size(shape: list[int]) -> int:
    return math.prod(shape) * WIRE_DTYPE.itemsize


def from_bytes(data, shape: list[int], what: str) -> np.ndarray:
    """A tensor of `shape` from its FP32 bytes (little-endian, row-major): exactly its byte size."""
    size = byte_size(shape)
    if len(data) != size:
        raise invalid(f"{what} is {len(data)} bytes; shape {shape} of {DATATYPE} is {size} bytes")
    return np.frombuffer(data, dtype=WIRE_DTYPE).astype(np.float32).reshape(shape)


def from_values(values, shape: list[int], what: str) -> np.ndarray:
    """A tensor of `shape` from its numbers (row-major): exactly its count."""
    count = math.prod(shape)
    if len(values) != count:
        raise invalid(f"{what} has {len(values)} numbers; shape {shape} needs {count}")
    return np.asarray(values, dtype=np.float32).reshape(shape)


def wire(values: np.ndarray) -> np.ndarray:
    """An output as it goes on the wire: FP32, little-endian, C-contiguous."""
    return np.ascontiguousarray(values, dtype=WIRE_DTYPE)


def _json_object(text: bytes, what: str) -> dict:
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise invalid(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise invalid(f"{what} must be a JSON object")
    return doc


def _flatten(data, depth: int = 0) -> list:
    """Row-major elements of `data` (flat, or nested as the tensor's shape, as Triton accepts)."""
    if not isinstance(data, list):
        return [data]
    if depth > 8:
        raise invalid("data is nested deeper than any tensor of these models")
    if data and isinstance(data[0], list):
        return [v for item in data for v in _flatten(item, depth + 1)]
    return data


def _bool_parameter(parameters, key: str, where: str) -> bool:
    value = parameters.get(key, False)
    if not isinstance(value, bool):
        raise invalid(f"{where}.parameters.{key} must be true or false")
    return value


def parse_infer(body: bytes, header_length: str | None, model: ModelInterface) -> InferRequest:
    """An inference request (JSON, or a JSON header followed by binary tensor data)."""
    if header_length is None:
        head, binary = body, b""
    else:
        if not header_length.strip().isdigit() or not 0 < int(header_length) <= len(body):
            raise invalid(
                f"{HEADER_LENGTH} is {header_length!r}; it must be the JSON header's size in bytes, "
                f"between 1 and the body's {len(body)} bytes"
            )
        head, binary = body[: int(header_length)], memoryview(body)[int(header_length) :]
    doc = _json_object(head, "the inference request")
    literals = any(literal in head for literal in NOT_NUMBERS)
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise invalid("id must be a string")
    parameters = doc.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise invalid("parameters must be an object")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise invalid(f"inputs must be a list of one tensor, {model.input.name!r}")
    array, used = _input(inputs[0], binary, model, literals)
    if used != len(binary):
        raise invalid(
            f"the body has {len(binary) - used} bytes of binary data that no binary_data_size accounts for"
        )
    return InferRequest(array, _requested_outputs(doc, parameters, model), request_id)


def _input(
    tensor: dict, binary: memoryview | bytes, model: ModelInterface, literals: bool = True
) -> tuple[np.ndarray, int]:
    """(the input array, bytes of binary data it used). `literals`: the JSON header has a true, false
    or null somewhere (then JSON data is checked for booleans, which NumPy would take as numbers)."""
    where = "inputs[0]"
    shape = tensor.get("shape")
    check_input(tensor.get("name"), tensor.get("datatype"), shape, model, where)
    parameters = tensor.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise invalid(f"{where}.parameters must be an object")
    if "binary_data_size" in parameters:
        size = parameters["binary_data_size"]
        if "data" in tensor:
            raise invalid(f"{where} has both data and parameters.binary_data_size")
        if size != byte_size(shape) or isinstance(size, bool):
            raise invalid(
                f"{where}.parameters.binary_data_size is {size!r}; shape {shape} of {DATATYPE} is "
                f"{byte_size(shape)} bytes"
            )
        if size > len(binary):
            raise invalid(f"{where} declares {size} bytes of binary data; the body has {len(binary)}")
        return from_bytes(binary[:size], shape, f"{where}'s binary data"), size
    if "data" not in tensor:
        raise invalid(f"{where} has neither data nor parameters.binary_data_size")
    return from_values(_numbers_of(_flatten(tensor["data"]), where, literals), shape, f"{where}.data"), 0


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
        raise invalid(
            f"{where}.data[{first['loc'][0]}]: {first['msg']} (data is the tensor's numbers, row-major)"
        ) from None
    return np.asarray(values, dtype=np.float64)


def _requested_outputs(doc: dict, parameters: dict, model: ModelInterface) -> tuple[tuple[str, bool], ...]:
    default_binary = _bool_parameter(parameters, "binary_data_output", "the request")
    asked = doc.get("outputs")
    if asked is None:
        return tuple((t.name, default_binary) for t in model.outputs)
    if not isinstance(asked, list) or not asked:
        raise invalid("outputs must be a non-empty list of {name, parameters}")
    chosen = []
    for i, out in enumerate(asked):
        where = f"outputs[{i}]"
        if not isinstance(out, dict) or model.output(out.get("name")) is None:
            names = [t.name for t in model.outputs]
            raise invalid(f"{where}.name must be one of {names}")
        params = out.get("parameters") or {}
        if not isinstance(params, dict):
            raise invalid(f"{where}.parameters must be an object")
        if params.get("classification"):
            raise invalid(f"{where}.parameters.classification: the classification extension is not supported")
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
        array = wire(values[name])
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
        "inputs": [tensor_metadata(model.input)],
        "outputs": [tensor_metadata(t) for t in model.outputs],
    }


def model_config(
    model: ModelInterface, version: str, triton: tuple[str, str], kind: str, count: int, tag: str
) -> dict:
    """Triton's model configuration of what is served: `max_batch_size` is the most items one request
    may carry, `preferred_batch_size` the batcher's batch, `max_queue_delay_microseconds` how long a
    short batch waits (MODELS__<NAME>__QUEUE_DELAY_US), the queue timeout its shedding deadline
    (MODELS__<NAME>__MAX_LATENCY_MS); the instance group `count` instances (workers) of `kind`
    (KIND_CPU, KIND_GPU); `parameters.bentoml_tag` the BentoML tag behind the integer version."""
    platform, runtime = triton  # Triton's platform and backend names of the format served
    limits = model.limits
    return {
        "name": model.name,
        "platform": platform,
        "backend": runtime,
        "version_policy": {"specific": {"versions": [version]}},
        "max_batch_size": model.max_items,
        "input": [tensor_config(model.input)],
        "output": [tensor_config(t) for t in model.outputs],
        "dynamic_batching": {
            "preferred_batch_size": [limits.max_batch_size],
            "max_queue_delay_microseconds": limits.queue_delay_us,
            "default_queue_policy": {
                "timeout_action": "REJECT",
                "default_timeout_microseconds": limits.max_latency_ms * 1000,
            },
        },
        "instance_group": [{"name": model.name, "kind": kind, "count": count}],
        "parameters": {"bentoml_tag": {"string_value": tag}},
    }
