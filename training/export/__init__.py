"""Export, parity gate and registration of trained models, one module a job:

- graphs.py: eager -> every format of the registry (models/formats.py), the files written;
- checkpoint.py: the trained weights (safetensors) and the network's config beside them;
- parity.py: the parity gate, every file through its serving backend against eager PyTorch;
- store.py: registration in the BentoML model store (all or nothing), and re-export from a stored
  checkpoint;
- __main__.py: `python -m training.export MODEL:VERSION [--formats ...]` (re-export).
"""
