"""What a latency-aware search records about its result: predicted and measured latency of the derived
architecture, written into ``RUN/arch.json`` under ``"latency"`` (architecture readers ignore the key)."""

from __future__ import annotations

import logging

from musicnas.latency.measure import deployed_from_arch, measure_deployed
from musicnas.latency.table import DEFAULT_TABLE_ROUNDS, DEFAULT_TABLE_RUNS, feature_config_for
from musicnas.utils.io import atomic_write_json, read_json

log = logging.getLogger(__name__)

MEASURE_SESSIONS = 3


def record_arch_latency(search, result: dict) -> dict:
    """Measures the derived architecture (``RUN/arch.json``) with the table's backend and threads, adds
    ``{"target_ms", "predicted_ms", "measured": <Measurement>, "table": ...}`` to arch.json and returns it."""
    model = search.latency_model
    arch_path = search.out / "arch.json"
    arch_json = read_json(arch_path, what="derived architecture")
    arch = search.space_module.Arch.from_json(arch_json)
    # the data's feature options, checked against the search's input: the measured network must be the
    # one the table predicted, never one with the default input shape
    config = feature_config_for(search.input_shape, getattr(search.data, "config", None))
    net = deployed_from_arch(arch, search.num_classes, config, search.input_shape[0])
    # the table's protocol, so predicted and measured are the same quantity; in MEASURE_SESSIONS separate
    # sessions, the fastest kept: one network alone has nothing to interleave with, and a busy spell of
    # a few seconds once made the same architecture measure 1.37 ms against 0.91 ms (docs/latency.md)
    sessions = [
        measure_deployed(
            net, model.backend, model.threads, runs=DEFAULT_TABLE_RUNS, rounds=DEFAULT_TABLE_ROUNDS
        )
        for _ in range(MEASURE_SESSIONS)
    ]
    measured = min(sessions, key=lambda m: m.latency_ms)
    predicted = model.predict(arch)
    target = search.config.cost_target
    record = {
        "target_ms": target,
        "predicted_ms": predicted,
        "measured_ms": measured.latency_ms,
        "measured_error": measured.latency_ms / target - 1.0 if target else None,
        "measured": measured.to_dict(),
        "measured_sessions_ms": [m.latency_ms for m in sessions],
        "table": model.describe(),
    }
    atomic_write_json(arch_path, {**arch_json, "latency": record})
    log.info(
        "derived architecture: predicted %.3f ms, measured %.3f ms (median %.3f) with %s, %d thread(s); target %s ms",
        predicted, measured.latency_ms, measured.median_ms, model.backend, model.threads, target,
    )  # fmt: skip
    return record
