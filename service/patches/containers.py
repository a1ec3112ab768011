"""Batch container lookup (bentoml 1.4.x): every queued request and every batch asks
`DataContainerRegistry.find_by_batch_type(type(data))` which container (list, ndarray, ...) batches it,
and each ask walks the registry with LazyType comparisons that import-check module names: ~6 % of a
worker's time under single-image load (py-spy, BENCHMARKS.md). The patched lookup remembers the
answer per concrete type; registering a container forgets them.
"""

from __future__ import annotations

from bentoml._internal.runner.container import DataContainerRegistry

stock_find_by_batch_type = DataContainerRegistry.find_by_batch_type.__func__
stock_register_container = DataContainerRegistry.register_container.__func__
FOUND: dict[type, type] = {}


def find_by_batch_type(cls, type_):
    if not isinstance(type_, type):  # a LazyType: BentoML's own lookup
        return stock_find_by_batch_type(cls, type_)
    found = FOUND.get(type_)
    if found is None:
        found = FOUND[type_] = stock_find_by_batch_type(cls, type_)
    return found


def register_container(cls, *args, **kwargs):
    FOUND.clear()
    return stock_register_container(cls, *args, **kwargs)


def apply() -> None:
    DataContainerRegistry.find_by_batch_type = classmethod(find_by_batch_type)
    DataContainerRegistry.register_container = classmethod(register_container)
