"""Runtime settings of the service: read once, from the environment (or a .env file)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models import registry
from models.device import available_cpus, available_memory
from models.formats import FORMATS


class ModelSettings(BaseModel):
    """One model's settings, MODELS__<NAME>__<FIELD> (e.g. MODELS__MNIST_CNN__MAX_BATCH_SIZE=32); unset
    fields take the model's defaults from models/registry.py."""

    model_config = {"extra": "forbid"}

    tag: str | None = None  # the store's version to serve (default <name>:latest)
    # Batching (service/batching.py): a batch holds at most max_batch_size rows; max_latency_ms is a
    # request's deadline in its batcher (queued + computed): a request that would be answered later,
    # by the measured cost of the rows ahead of it and its own, is refused at once with 503 and
    # Retry-After.
    max_batch_size: int | None = Field(None, ge=2)
    max_latency_ms: int | None = Field(None, ge=1)
    max_items: int | None = Field(None, ge=1)  # rows / images per request (its JSON field and V2)
    # how long a batch short of max_batch_size waits for more requests, from its oldest request's
    # arrival (Triton's max_queue_delay_microseconds): trades that much latency for fuller batches
    # where requests arrive one by one (gRPC: BENCHMARKS.md)
    queue_delay_us: int | None = Field(None, ge=0, le=1_000_000)


@dataclass(frozen=True)
class ModelLimits:
    """A model's resolved settings: MODELS__<NAME>__* > the old flat names > the registry's defaults."""

    name: str  # the model's
    tag: str
    max_batch_size: int
    max_latency_ms: int
    max_items: int
    queue_delay_us: int

    def setting(self, field: str) -> str:
        """The environment variable of one of these settings, e.g. MODELS__MNIST_CNN__MAX_LATENCY_MS."""
        return f"MODELS__{self.name.upper()}__{field.upper()}"


# The flat names of the first two models, kept as aliases of their MODELS__<NAME>__* settings.
LEGACY_NAMES = {
    "housing_mlp": {
        "tag": "housing_model",
        "max_batch_size": "housing_max_batch_size",
        "max_latency_ms": "housing_max_latency_ms",
        "max_items": "max_housing_rows",
    },
    "mnist_cnn": {
        "tag": "mnist_model",
        "max_batch_size": "mnist_max_batch_size",
        "max_latency_ms": "mnist_max_latency_ms",
        "max_items": "max_images",
    },
}


class ServiceSettings(BaseSettings):
    """Every knob of the service. Environment variables have the same name in upper case."""

    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", protected_namespaces=(), env_nested_delimiter="__"
    )

    # Which exported graph runs the model, and where (service/placement.py): `auto` or a format of
    # models/formats.py (onnx, torchscript, aoti). `auto`: the measured best per device; `cuda` that
    # cannot be had is a start-up error, never a silent fallback. GET /status says what and why.
    model_backend: str = "auto"
    model_device: Literal["auto", "cpu", "cuda"] = "auto"
    # Per model (models/registry.py), MODELS__<NAME>__TAG / MAX_BATCH_SIZE / MAX_LATENCY_MS / MAX_ITEMS:
    # see ModelSettings; `model(name)` resolves them.
    models: dict[str, ModelSettings] = {}
    # Aliases of MODELS__HOUSING_MLP__* and MODELS__MNIST_CNN__* (their names before the registry).
    housing_model: str | None = None
    mnist_model: str | None = None
    housing_max_batch_size: int | None = Field(None, ge=2)
    housing_max_latency_ms: int | None = Field(None, ge=1)
    mnist_max_batch_size: int | None = Field(None, ge=2)
    mnist_max_latency_ms: int | None = Field(None, ge=1)
    max_housing_rows: int | None = Field(None, ge=1)
    max_images: int | None = Field(None, ge=1)
    # BentoML worker processes (0 = one per CPU this process may use: affinity mask and cgroup quota,
    # not the host's core count), and the intra-op threads of each model session (ONNX Runtime) /
    # torch.set_num_threads (TorchScript) in each worker; 0 = those CPUs / workers, so the workers
    # together never oversubscribe them.
    workers: int = Field(0, ge=0)
    intra_op_threads: int = Field(0, ge=0)
    # Per-request work that is off by default because it costs more than the model (BENCHMARKS.md):
    # BentoML's access log (one INFO line per request) and OpenTelemetry request spans (exported only
    # when a tracing exporter is configured in a BentoML config file, BENTOML_CONFIG). With either on,
    # the service's routes go through BentoML's per-request middleware (service/front.py).
    access_log: bool = False
    tracing: bool = False
    # True: the service's routes go through BentoML's per-request middleware (its request metrics,
    # timeout and concurrency middleware, and the access log and spans when on) instead of straight to
    # the service's handlers; ACCESS_LOG and TRACING imply it. Off by default: it costs more CPU per
    # request than a batched model (BENCHMARKS.md).
    bentoml_middleware: bool = False
    # Admission by cost, per worker (README "Bad input, overload and faults"): a request is refused
    # with 503 when it would miss its deadline (above), or when the bodies and headers of the requests
    # the worker holds would pass max_inflight_bytes (service/limits.py; 0 = a quarter of the memory
    # this process may use (cgroup limit or the machine's) divided among the workers);
    # max_concurrency is only a generous hard cap on requests in flight per worker (429; probes and
    # metrics exempt): a count is the wrong measure when one request is a row and another 256 images.
    # Nothing runs longer than request_timeout_s (504).
    max_concurrency: int = Field(1000, ge=1)
    max_inflight_bytes: int = Field(0, ge=0)
    request_timeout_s: int = Field(30, ge=1)
    # Authentication (service/auth.py): off unless a token is set, in the environment or in a file
    # (a mounted secret). Shown redacted in /status. Paths that stay open for probes and scrapers.
    api_token: SecretStr | None = None
    api_token_file: Path | None = None
    auth_open_paths: list[str] = ["/livez", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"]
    # The Open Inference Protocol over gRPC (service/oip_grpc.py), in every worker: Triton's port;
    # 0 = off. GRPC_HOST: the address it listens on (the container's image sets 0.0.0.0).
    grpc_port: int = Field(8001, ge=0, le=65535)
    grpc_host: str = "127.0.0.1"
    # The server under the gRPC servicer (service/oip_grpc.py): `native` (pygrpc-native: grpc.aio's API,
    # HTTP/2 in Rust, calls handed to the event loop in batches; a third of grpc.aio's CPU per call) or
    # `grpcio` (grpc.aio itself, the fallback): BENCHMARKS.md compares them.
    grpc_server: Literal["native", "grpcio"] = "native"
    # Request limits (MAX_BODY_BYTES is also gRPC's largest message).
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    max_header_bytes: int = Field(64 * 1024, ge=4096)  # request line + headers (431 past it)
    # Slow clients (a byte a second): the head must arrive within header_timeout_s of the connection
    # or of its first byte (408), the body within body_timeout_s of the head (408).
    header_timeout_s: float = Field(10.0, gt=0)
    body_timeout_s: float = Field(30.0, gt=0)
    max_upload_bytes: int = Field(5 * 1024 * 1024, ge=1024)
    max_upload_pixels: int = Field(4096 * 4096, ge=784)

    @field_validator("models")
    @classmethod
    def _known_models(cls, value: dict[str, ModelSettings]) -> dict[str, ModelSettings]:
        unknown = set(value) - set(registry.models())
        if unknown:
            known = ", ".join(registry.models())
            raise ValueError(f"MODELS__<NAME>: unknown model(s) {sorted(unknown)}; known: {known}")
        return value

    def model(self, name: str) -> ModelLimits:
        """The settings of one model of the registry."""
        entry = registry.get(name)
        nested = self.models.get(name, ModelSettings())
        legacy = LEGACY_NAMES.get(name, {})

        def pick(key: str, default):
            value = getattr(nested, key)
            if value is None and key in legacy:
                value = getattr(self, legacy[key])
            return default if value is None else value

        return ModelLimits(
            name=name,
            tag=pick("tag", f"{name}:latest"),
            max_batch_size=pick("max_batch_size", entry.max_batch_size),
            max_latency_ms=pick("max_latency_ms", entry.max_latency_ms),
            max_items=pick("max_items", entry.json.max_items),
            queue_delay_us=pick("queue_delay_us", entry.queue_delay_us),
        )

    @field_validator("model_backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if value != "auto" and value not in FORMATS:
            raise ValueError(f"MODEL_BACKEND must be auto or one of {', '.join(FORMATS)}")
        return value

    def token(self) -> str | None:
        """The bearer token (API_TOKEN, or the first line of API_TOKEN_FILE), or None: no authentication."""
        if self.api_token is not None and self.api_token_file is not None:
            raise ValueError("set API_TOKEN or API_TOKEN_FILE, not both")
        if self.api_token_file is not None:
            try:
                token = (self.api_token_file.read_text().splitlines() or [""])[0].strip()
            except OSError as exc:
                raise ValueError(f"API_TOKEN_FILE={self.api_token_file}: {exc.strerror}") from None
        else:
            token = self.api_token.get_secret_value().strip() if self.api_token else None
        if token == "":
            raise ValueError("the API token is empty (API_TOKEN / API_TOKEN_FILE)")
        return token

    def worker_count(self) -> int:
        return self.workers or available_cpus()

    def inflight_bytes_budget(self) -> int:
        """MAX_INFLIGHT_BYTES, or (0) a quarter of the memory this process may use per worker, at least
        16 MiB: 3 GiB per worker on a 24 GiB machine with 2 workers, 256 MiB in a 2 GiB container."""
        if self.max_inflight_bytes:
            return self.max_inflight_bytes
        return max(16 << 20, available_memory() // 4 // self.worker_count())

    def threads_per_worker(self) -> int:
        return self.intra_op_threads or max(1, available_cpus() // self.worker_count())


@lru_cache(maxsize=1)
def get_settings() -> ServiceSettings:
    return ServiceSettings()
