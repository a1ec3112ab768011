"""BentoML service serving housing_mlp and mnist_cnn. Run: `bentoml serve` from the repo root."""
