"""What load-test clients send and read besides plain JSON: Open Inference Protocol (KServe V2) bodies,
encoded and decoded by the real `tritonclient.http` (the client Triton and KServe users have), and
the service's `Server-Timing` header."""

from __future__ import annotations

import numpy as np
from tritonclient.http import InferenceServerClient, InferInput, InferRequestedOutput, InferResult

HEADER_LENGTH = "Inference-Header-Content-Length"


def v2_path(model: str) -> str:
    return f"/v2/models/{model}/infer"


def v2_body(input_name: str, array: np.ndarray, output_name: str, binary: bool) -> tuple[bytes, dict]:
    """(body, headers) of a V2 inference request for one FP32 input, asking for one output; `binary`:
    the tensors travel as binary data both ways, else as JSON."""
    tensor = InferInput(input_name, list(array.shape), "FP32")
    tensor.set_data_from_numpy(np.ascontiguousarray(array, dtype=np.float32), binary_data=binary)
    body, header_length = InferenceServerClient.generate_request_body(
        [tensor], outputs=[InferRequestedOutput(output_name, binary_data=binary)]
    )
    if header_length is None:
        return body, {"Content-Type": "application/json"}
    return body, {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(header_length)}


def v2_output(body: bytes, headers, name: str) -> np.ndarray:
    """Output `name` of a V2 inference response (JSON or binary)."""
    length = headers.get(HEADER_LENGTH)
    result: InferResult = InferenceServerClient.parse_response_body(
        body, header_length=int(length) if length else None
    )
    out = result.as_numpy(name)
    if out is None:
        raise ValueError(f"no output {name!r} in the response")
    return out


def server_timing(header: str | None) -> dict[str, str]:
    """`Server-Timing: queue;dur=0.4, compute;dur=11.2, batch;desc="64", ...` as {metric: dur or desc}."""
    out: dict[str, str] = {}
    for metric in (header or "").split(","):
        name, _, params = metric.strip().partition(";")
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key in ("dur", "desc") and name:
                out[name] = value.strip('"')
    return out
