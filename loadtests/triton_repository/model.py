"""The Python-backend model of Triton's yardstick (loadtests/triton_yardstick.py): one ONNX Runtime
session per model instance on the file its config names (parameter `onnx_path`), one intra-op thread
without spinning as the service's sessions (models/backends.py); the requests of a dynamic batch run
as one batch and are sliced back. Runs inside Triton's Python backend stub, not in this project."""

import json

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        path = config["parameters"]["onnx_path"]["string_value"]
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.outputs = [o.name for o in self.session.get_outputs()]

    def execute(self, requests):
        inputs = [pb_utils.get_input_tensor_by_name(r, self.input).as_numpy() for r in requests]
        results = self.session.run(None, {self.input: np.concatenate(inputs).astype(np.float32, copy=False)})
        responses, start = [], 0
        for x in inputs:
            end = start + len(x)
            tensors = [
                pb_utils.Tensor(name, out[start:end]) for name, out in zip(self.outputs, results, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start = end
        return responses
