"""Training, evaluation and export of the two models. Entry points: `python -m training.housing`,
`python -m training.mnist`."""
