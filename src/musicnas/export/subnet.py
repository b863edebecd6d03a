"""Ship a searched model without retraining: the chosen architecture's sub-network, cut out of the search
network with the shared weights the search trained, written as an ordinary model bundle (so `evaluate`,
`predict`, `export` and `musicnas.load` work on it). Retraining from scratch (`musicnas train`) usually
scores better; this is the quick path, and a measure of what the shared weights alone achieve."""

from __future__ import annotations

import os
from pathlib import Path

from musicnas.runtime import MusicnasError, describe_exception
from musicnas.utils.io import load_checkpoint


def bundle_from_search(run_dir: str | os.PathLike, out_dir: str | os.PathLike, data=None, arch=None) -> Path:
    """Writes a model bundle of ``arch`` (default: the run's ``arch.json``) with the shared weights of the
    search run's last checkpoint. ``data`` (a FeatureCache) gives classes, feature options and
    normalisation; by default the run's own data is opened."""
    from musicnas.export.bundle import save_bundle
    from musicnas.models import ModelSpec
    from musicnas.search.enas import load_run_config
    from musicnas.spaces import get_space_module, load_arch

    run = Path(run_dir)
    config = load_run_config(run)
    arch = arch if arch is not None else load_arch(run / "arch.json")
    if arch.space.type != config.space:
        raise MusicnasError(f"{arch.space.type} architecture given for a {config.space} search run ({run})")
    if data is None:
        from musicnas.data.cache import open_data

        if not config.data:
            raise MusicnasError(f"{run}/config.json records no data path; pass the data explicitly")
        data = open_data(config.data, config.cache_dir, seed=config.seed)
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    if "model" not in state:
        raise MusicnasError(f"{run}/checkpoints/last.pt holds no shared weights ('model')")
    space = get_space_module(arch.space.type)
    in_channels = int(data.input_shape[0])
    search_net = space.SearchNet(
        arch.space, in_channels=in_channels, num_classes=data.num_classes, dropout=config.child_dropout
    )
    try:
        search_net.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise MusicnasError(
            f"the search checkpoint does not fit a {arch.space.type} search network for this data "
            f"({data.num_classes} classes, input {tuple(data.input_shape)}): {describe_exception(exc)}"
        ) from exc
    subnet = space.extract_subnet(search_net.eval(), arch).eval()
    spec = ModelSpec.for_type(
        f"{arch.space.type}_subnet", in_channels, data.num_classes, dropout=config.child_dropout
    )
    summary = {"source": "extracted from the search network (no retraining)", "search_run": str(run)}
    return save_bundle(
        out_dir, subnet, arch, data.config, list(data.classes), data.mean, data.std, summary, model_spec=spec
    )
