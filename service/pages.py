"""The service's own pages: `/` (what this service is: its models, example requests, links) and
`/docs` (the Swagger UI of /docs.json, from the assets BentoML ships and serves under
/static_content: nothing is fetched from the internet)."""

from __future__ import annotations

from html import escape

from models import registry
from models.specs import HOUSING
from service.interface import UPLOAD_ROUTE

STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; max-width: 62rem; margin: 2rem auto; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
table { border-collapse: collapse; }
td, th { border: 1px solid #ccc; padding: .3rem .6rem; text-align: left; }
pre { background: #f4f4f4; padding: .7rem; overflow-x: auto; } code { background: #f4f4f4; }
.muted { color: #666; }
"""


def _metric(metadata: dict) -> str:
    metrics = {k: v for k, v in metadata.items() if k.startswith("test_") and isinstance(v, int | float)}
    return ", ".join(f"{k.removeprefix('test_')} {v:.4g}" for k, v in sorted(metrics.items())) or "-"


def index(plane) -> str:
    """The first page. `plane`: the worker's service.dataplane.DataPlane (its models once loaded)."""
    rows = []
    for name, interface in plane.interfaces.items():
        model = plane.models.get(name)
        if model is None:
            tag, runs, metric = "(loading)", "-", "-"
        else:
            described = model.backend.describe()
            tag, runs = model.tag, f"{described['backend']} on {described['device']}"
            metric = _metric(model.metadata)
        spec = interface.spec
        rows.append(
            f"<tr><td><code>{escape(name)}</code></td><td>{escape(tag)}</td><td>{escape(runs)}</td>"
            f"<td>{escape(metric)}</td><td><code>POST {interface.route}</code>, "
            f"<code>POST /v2/models/{name}/infer</code></td>"
            f"<td><code>{spec.input_name}</code> {list((-1, *spec.input_shape))} &rarr; "
            f"<code>{spec.output_name}</code> {list((-1, *spec.output_shape))}</td></tr>"
        )
    housing = escape('{"features": [' + str(registry.get(HOUSING.name).json.example) + "]}")
    base = "http://127.0.0.1:3000"
    links = [
        ("/docs", "the API in the Swagger UI (try every endpoint)"),
        ("/docs.json", "the OpenAPI document"),
        ("/status", "models, backend and device, batching, settings, the worker that answered"),
        ("/metrics", "Prometheus metrics of all workers (batch sizes, queue and compute time, requests)"),
        ("/readyz", "readiness probe"),
        ("/livez", "liveness probe"),
        ("/v2", "Open Inference Protocol: server metadata"),
        ("/v2/models/stats", "Open Inference Protocol: Triton statistics"),
        *((f"/v2/models/{name}", f"Open Inference Protocol: {name} metadata") for name in plane.interfaces),
    ]
    link_items = "\n".join(f'<li><a href="{href}">{href}</a>: {escape(text)}</li>' for href, text in links)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(plane.server_name)}</title>
<style>{STYLE}</style></head><body>
<h1>{escape(plane.server_name)}</h1>
<p class="muted">PyTorch models exported to ONNX / TorchScript / AOTInductor, served with batching by this
BentoML service: JSON endpoints, an image upload, and the Open Inference Protocol (KServe V2) as
Triton's clients speak it. Every prediction answers with a <code>Server-Timing</code> header (queue,
compute, batch, backend).</p>
<h2>Models</h2>
<table><tr><th>model</th><th>version served</th><th>runs with</th><th>test metrics</th><th>endpoints</th>
<th>input &rarr; output</th></tr>
{"".join(rows)}
</table>
<h2>Try it</h2>
<pre>curl -s -X POST {base}/predict_housing -H 'Content-Type: application/json' \\
     -d '{housing}'
# one value per row: median house value in $100,000

curl -s -X POST {base}/classify_digits -H 'Content-Type: application/json' \\
     -d '{{"images": [[[0.0, ...28 values...], ...28 rows...]]}}'
# [{{"label": 7, "probabilities": [...10 values...]}}]   (intensities in [0, 1], white on black)

curl -s -X POST {base}{UPLOAD_ROUTE} -F image=@digit.png
# {{"label": 3, "probabilities": [...]}}   (any picture of one digit; dark-on-light is detected)</pre>
<p>With Triton's client (<code>pip install 'tritonclient[http]'</code>), binary tensors:</p>
<pre>import numpy as np, tritonclient.http as triton
client = triton.InferenceServerClient("127.0.0.1:3000")
x = triton.InferInput("images", [64, 1, 28, 28], "FP32")
x.set_data_from_numpy(np.zeros((64, 1, 28, 28), np.float32), binary_data=True)
client.infer("mnist_cnn", [x]).as_numpy("probabilities")   # (64, 10)</pre>
<h2>Links</h2>
<ul>
{link_items}
</ul>
</body></html>
"""


def swagger(title: str) -> str:
    """The Swagger UI of /docs.json."""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}: API</title>
<link rel="stylesheet" href="/static_content/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/static_content/swagger-ui-bundle.js"></script>
<script src="/static_content/swagger-ui-standalone-preset.js"></script>
<script>
window.ui = SwaggerUIBundle({{url: "/docs.json", dom_id: "#swagger-ui", deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset], layout: "BaseLayout"}});
</script></body></html>
"""
