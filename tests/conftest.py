"""Shared fixtures: Streamlit caches start empty in every test (AppTest runs share one process)."""

import pytest


@pytest.fixture(autouse=True)
def _clear_streamlit_caches():
    """st.cache_data / st.cache_resource outlive an AppTest instance; clear them around each test."""
    try:
        import streamlit as st
    except ImportError:  # a test environment without the dashboard's dependencies
        yield
        return
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.fixture(scope="session")
def demo_workspace(tmp_path_factory):
    """A workspace holding a miniature demo (`dat demo` in one epoch on a narrow CNN): the saved
    device-A / device-B profiles and the sgd / dat-a / dat-b trio, shared by the dashboard tests."""
    from dat.train import make_demo

    root = tmp_path_factory.mktemp("workspace")
    make_demo(folder=str(root / "checkpoints"), profiles_folder=str(root / "profiles"),
              epochs=1, width=4, hidden=8, eval_draws=2)
    return root


@pytest.fixture(scope="session")
def tiny_trio(tmp_path_factory) -> dict:
    """Three untrained narrow CNN6 checkpoints on digits geometry (seeds 0, 1, 2), by trio label:
    enough to span a landscape plane quickly. Read-only for the tests that share it."""
    import torch

    from dat.checkpoint import save_checkpoint
    from dat.models import build_model
    from dat.trio import LABELS

    folder = tmp_path_factory.mktemp("tiny-trio")
    paths = {}
    for seed, label in enumerate(LABELS):
        torch.manual_seed(seed)
        model = build_model("cnn6", batchnorm=True, in_channels=1, image_size=8, num_classes=10, width=4, hidden=16)
        paths[label] = str(save_checkpoint(folder / f"{label}.safetensors", model, {"method": label}))
    return paths
