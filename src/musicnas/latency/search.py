"""What a latency-aware search records about its result: predicted and measured latency of the derived
architecture, written into ``RUN/arch.json`` under ``"latency"`` (architecture readers ignore the key)."""

from __future__ import annotations

import logging

from musicnas.latency.measure import deployed_from_arch
from musicnas.latency.table import feature_config_for, measure_against_table
from musicnas.utils.io import atomic_write_json, read_json

log = logging.getLogger(__name__)

MEASURE_SESSIONS = 3


def record_arch_latency(search, result: dict) -> dict:
    """Measures the derived architecture (``RUN/arch.json``) with the table's backend and threads,
    interleaved with the table's reference networks, adds ``{"target_ms", "predicted_ms", "measured_ms"
    (raw), "drift_factor", "corrected_ms" (raw / drift), "measured": <Measurement>, "drift": ..., "table":
    ...}`` to arch.json and returns it."""
    model = search.latency_model
    arch_path = search.out / "arch.json"
    arch_json = read_json(arch_path, what="derived architecture")
    arch = search.space_module.Arch.from_json(arch_json)
    # the data's feature options, checked against the search's input: the measured network must be the
    # one the table predicted, never one with the default input shape
    config = feature_config_for(search.input_shape, getattr(search.data, "config", None))
    net = deployed_from_arch(arch, search.num_classes, config, search.input_shape[0])
    # the table's protocol, so predicted and measured are the same quantity, interleaved with the table's
    # fitting networks (the references), whose latency when the table was built is known: the machine's
    # speed drifts by tens of percent over minutes (the same network measured 0.78 and 1.13 ms a minute
    # apart, docs/latency.md), and the references tell that drift from the network's latency. In
    # MEASURE_SESSIONS sessions, each network's fastest run over all of them kept.
    found = measure_against_table(model, net, sessions=MEASURE_SESSIONS)
    measured = found.measured
    predicted = model.predict(arch)
    target = search.config.cost_target
    record = {
        "target_ms": target,
        "predicted_ms": predicted,
        "measured_ms": measured.latency_ms,
        "measured_error": measured.latency_ms / target - 1.0 if target else None,
        "drift_factor": found.drift_factor,
        "corrected_ms": found.corrected_ms,
        "corrected_error": found.corrected_ms / target - 1.0 if target else None,
        "measured": measured.to_dict(),
        "drift": {
            k: v
            for k, v in found.to_dict().items()
            if k in ("estimator", "round_drift", "references", "sessions")
        },
        "table": model.describe(),
    }
    atomic_write_json(arch_path, {**arch_json, "latency": record})
    log.info(
        "derived architecture: predicted %.3f ms, measured %.3f ms (median %.3f), drift %.3f, corrected "
        "%.3f ms with %s, %d thread(s); target %s ms",
        predicted, measured.latency_ms, measured.median_ms, found.drift_factor, found.corrected_ms,
        model.backend, model.threads, target,
    )  # fmt: skip
    return record
