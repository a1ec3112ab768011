"""The codecs in-process: every protocol decodes to one float32 array per request or a 4xx naming what
is wrong, with the rules of service/schemas.py. The JSON codec's NumPy fast path must agree with the
pydantic model on every body: accept exactly what it accepts, with the same array."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service import oip
from service.codecs import JsonRows, digit_predictions, softmax
from service.errors import Refused
from service.images import decode_upload
from service.interface import interfaces
from service.settings import ServiceSettings

pytestmark = pytest.mark.inprocess
MODELS = interfaces(ServiceSettings())
HOUSING = MODELS["housing_mlp"].codec
DIGITS = MODELS["mnist_cnn"].codec


def slow(codec: JsonRows, body: bytes):
    """What the pydantic model alone says: the array, or the error body."""
    try:
        doc = codec.schema.model_validate_json(body)
    except Exception as exc:  # ValidationError
        return "error", exc.errors(include_context=False, include_input=False)
    return "ok", np.asarray(getattr(doc, codec.field), dtype=np.float32)


def decoded(codec: JsonRows, body: bytes):
    try:
        return "ok", codec.decode(body).reshape(-1, *codec.item_shape)
    except Refused as exc:
        assert exc.status == 400 and exc.body()["error"].endswith("validation error for Input")
        return "error", exc.body()["detail"]


def same(a, b) -> bool:
    if a[0] != b[0]:
        return False
    if a[0] == "ok":
        return a[1].shape == b[1].shape and np.array_equal(a[1], b[1])
    return a[1] == b[1]


numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.sampled_from([0, 1, -1, 0.5, 1e6, -1e6, 1e6 + 1, 1.0000001, 2.0]),
)
values = st.one_of(numbers, numbers, numbers, st.booleans(), st.none(), st.text(max_size=3))
housing_rows = st.lists(st.lists(values, min_size=7, max_size=9), min_size=0, max_size=3)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(rows=housing_rows, extra=st.sampled_from([None, "rows", "features2"]))
def test_fast_path_agrees_with_pydantic_on_housing_bodies(rows, extra):
    doc = {"features": rows}
    if extra:
        doc[extra] = 1
    body = json.dumps(doc).encode()
    assert same(decoded(HOUSING, body), slow(HOUSING, body))


pixels = st.one_of(
    st.floats(min_value=-0.5, max_value=1.5), st.sampled_from([0, 1, 0.0, 1.0, True, None, "0"])
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(pixel=pixels, where=st.integers(0, 28 * 28 - 1), count=st.integers(0, 2))
def test_fast_path_agrees_with_pydantic_on_image_bodies(pixel, where, count):
    images = np.full((count, 28, 28), 0.25).tolist()
    if count:
        images[0][where // 28][where % 28] = pixel
    body = json.dumps({"images": images}).encode()
    assert same(decoded(DIGITS, body), slow(DIGITS, body))


@pytest.mark.parametrize(
    "body",
    [
        b'{"features": [[1, 2, 3, 4, 5, 6, 7, NaN]]}',
        b'{"features": [[1, 2, 3, 4, 5, 6, 7, 1e400]]}',
        b'{"features": [[1,2',
        b"",
        b"[]",
        b'{"features": [[1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3]]}',
        b'{"features": [[1, 2, 3, 4, 5, 6, 7, 8]], "features": []}',
        b'{"features": [[1, 2, 3, 4, 5, 6, 7, 99999999999999999999999]]}',
    ],
)
def test_edge_bodies_agree(body):
    assert same(decoded(HOUSING, body), slow(HOUSING, body))


def test_valid_bodies_decode_to_the_model_shape():
    body = orjson.dumps({"features": [[1.5] * 8] * 3})
    assert HOUSING._fast(body) is not None  # valid bodies take the fast path
    x = HOUSING.decode(body)
    assert x.shape == (3, 8) and x.dtype == np.float32 and x.flags["C_CONTIGUOUS"]
    images = DIGITS.decode(orjson.dumps({"images": np.zeros((2, 28, 28)).tolist()}))
    assert images.shape == (2, 1, 28, 28) and images.dtype == np.float32


def test_error_body_names_the_field():
    with pytest.raises(Refused) as info:
        HOUSING.decode(b'{"features": [[1, 2, 3, 4, 5, 6, 7, "8"]]}')
    assert info.value.body()["error"] == "1 validation error for Input"
    assert info.value.body()["detail"][0]["loc"] == ("features", 0, 7)


def test_post_processing():
    logits = np.array([[0.0, 1.0, 2.0], [5.0, 0.0, 0.0]], dtype=np.float32)
    probabilities = softmax(logits)
    assert probabilities.dtype == np.float64 and np.allclose(probabilities.sum(1), 1)
    answers = digit_predictions(logits)
    assert [a["label"] for a in answers] == [2, 0]
    assert json.loads(orjson.dumps(answers, option=orjson.OPT_SERIALIZE_NUMPY))[0]["probabilities"] == (
        pytest.approx(probabilities[0].tolist())
    )


V2 = MODELS["mnist_cnn"]


def _v2_json(data, **tensor) -> bytes:
    tensor = {"name": "images", "datatype": "FP32", "shape": [1, 1, 28, 28], "data": data, **tensor}
    return orjson.dumps({"inputs": [tensor]})


def test_v2_json_and_binary_decode_to_the_same_array():
    image = np.random.default_rng(0).random((1, 1, 28, 28), dtype=np.float32)
    as_json = oip.parse_infer(_v2_json(image.ravel().tolist()), None, V2)
    head = orjson.dumps({"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 1, 28, 28],
                                     "parameters": {"binary_data_size": image.nbytes}}],
                         "parameters": {"binary_data_output": True}})  # fmt: skip
    as_binary = oip.parse_infer(head + image.tobytes(), str(len(head)), V2)
    assert np.array_equal(as_json.array, image) and np.array_equal(as_binary.array, image)
    assert as_binary.outputs == (("logits", True), ("probabilities", True))


@pytest.mark.parametrize(
    "data, words",
    [
        (["0.5"] * 784, "data[0]"),
        ([0.5] * 783 + [True], "data[783]"),
        ([0.5] * 783 + [None], "data[783]"),
        ([0.5] * 700, "needs 784"),
    ],
)
def test_v2_json_data_must_be_numbers_of_the_right_count(data, words):
    with pytest.raises(Refused, match=words.replace("[", r"\[").replace("]", r"\]")):
        oip.parse_infer(_v2_json(data), None, V2)


def test_v2_values_are_not_range_checked_and_non_finite_outputs_are_json_null():
    """As Triton: any FP32 value is computed on (the JSON API keeps its ranges); a non-finite output
    is `null` in a JSON answer."""
    assert oip.parse_infer(_v2_json([2.0] * 784), None, V2).array.max() == 2.0
    head = orjson.dumps({"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 1, 28, 28],
                                     "parameters": {"binary_data_size": 784 * 4}}]})  # fmt: skip
    nan = np.full(784, np.nan, dtype=np.float32)
    request = oip.parse_infer(head + nan.tobytes(), str(len(head)), V2)
    assert np.isnan(request.array).all()
    logits = np.array([[np.nan, np.inf, -np.inf, 1.5] + [0.0] * 6], dtype=np.float32)
    body, _ = oip.encode_infer(V2, "1", request, {"logits": logits, "probabilities": logits})
    assert orjson.loads(body)["outputs"][0]["data"][:4] == [None, None, None, 1.5]


def test_v2_outputs_are_computed_from_the_model_rows():
    logits = np.array([[1.0, 2.0] + [0.0] * 8], dtype=np.float32)
    values = V2.output_values(logits, ["logits", "probabilities"])
    assert values["logits"] is logits
    assert values["probabilities"].dtype == np.float32 and np.isclose(values["probabilities"].sum(), 1)


def test_upload_codec_limits_and_errors(tmp_path):
    from loadtests.payloads import png_bytes

    x = decode_upload(png_bytes(np.eye(28)), "auto", 5 << 20, 16 << 20)
    assert x.shape == (1, 1, 28, 28) and x.dtype == np.float32
    for data, invert, status, words in (
        (png_bytes(np.eye(28)), "sideways", 400, "invert"),
        (b"not an image", "auto", 400, "not an image"),
        (png_bytes(np.zeros((28, 28))), "auto", 400, "no digit"),
        (png_bytes(np.eye(28)) + b"\0" * 100, "auto", 413, "bytes"),
    ):
        with pytest.raises(Refused) as info:
            decode_upload(data, invert, len(png_bytes(np.eye(28))) + 10, 16 << 20)
        assert info.value.status == status and words in info.value.message, (words, info.value.message)
