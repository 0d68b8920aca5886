"""multi_scale_deform_attn: PyTorch path and C++ kernel against an independent float64 reference."""

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparse_detr import _ext
from sparse_detr.layers import ms_deform_attn_function, multi_scale_deform_attn
from tests.helpers.msda_reference import level_start_index_of, ms_deform_attn_reference

requires_extension = pytest.mark.skipif(
    not _ext.extension_available(),
    reason="sparse_detr._C is not built: run `pip install --no-build-isolation -e .`",
)
BACKENDS = ["pytorch", pytest.param("extension", marks=requires_extension)]
TOLERANCE = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-10, atol=1e-10)}


def make_inputs(level_shapes, batch=2, queries=5, heads=2, channels=3, points=2, dtype=torch.float64,
                margin=0.3, seed=0):
    """Random inputs; locations in [-margin, 1 + margin] so that some points fall outside the maps."""
    generator = torch.Generator().manual_seed(seed)
    spatial_shapes = torch.tensor(level_shapes, dtype=torch.int64)
    tokens = int(spatial_shapes.prod(1).sum())
    levels = len(level_shapes)
    value = torch.randn(batch, tokens, heads, channels, generator=generator, dtype=dtype)
    locations = torch.rand(batch, queries, heads, levels, points, 2, generator=generator, dtype=dtype)
    locations = locations * (1 + 2 * margin) - margin
    weights = torch.rand(batch, queries, heads, levels, points, generator=generator, dtype=dtype)
    return value, spatial_shapes, level_start_index_of(spatial_shapes), locations, weights


@settings(max_examples=25, deadline=None)
@given(
    level_shapes=st.lists(st.tuples(st.integers(1, 6), st.integers(1, 6)), min_size=1, max_size=3),
    batch=st.integers(1, 2),
    queries=st.integers(0, 6),
    heads=st.integers(1, 3),
    channels=st.integers(1, 9),
    points=st.integers(1, 3),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**16),
)
def test_backends_match_reference(level_shapes, batch, queries, heads, channels, points, dtype, seed):
    inputs = make_inputs(level_shapes, batch, queries, heads, channels, points, dtype, seed=seed)
    value, spatial_shapes, _, locations, weights = inputs
    expected = ms_deform_attn_reference(value, spatial_shapes, locations, weights)
    backends = ["pytorch"] + (["extension"] if _ext.extension_available() else [])
    for backend in backends:
        output = multi_scale_deform_attn(*inputs, backend=backend)
        assert output.shape == (batch, queries, heads * channels)
        assert output.dtype == dtype
        torch.testing.assert_close(output.double(), expected, **TOLERANCE[dtype], msg=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_points_on_and_beyond_the_borders(backend):
    value, spatial_shapes, level_start, _, _ = make_inputs([(3, 4), (1, 1)], batch=1, heads=1)
    border = torch.tensor([-0.5, -0.01, 0.0, 0.1, 0.5, 0.99, 1.0, 1.01, 1.5], dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(border, border, indexing="xy"), dim=-1).reshape(-1, 2)
    queries = grid.shape[0]
    locations = grid.view(1, queries, 1, 1, 1, 2).expand(1, queries, 1, 2, 1, 2)
    weights = torch.ones(1, queries, 1, 2, 1, dtype=torch.float64)
    output = multi_scale_deform_attn(value, spatial_shapes, level_start, locations, weights, backend=backend)
    expected = ms_deform_attn_reference(value, spatial_shapes, locations, weights)
    torch.testing.assert_close(output, expected)
    far_outside = (grid < -0.2).any(-1) | (grid > 1.2).any(-1)
    assert far_outside.any() and (output[0, far_outside] == 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_inputs(backend):
    inputs = make_inputs([(4, 3), (2, 2)], heads=3, channels=4)
    value, spatial_shapes, level_start, locations, weights = inputs
    # same values, non-contiguous memory
    value_nc = value.transpose(2, 3).contiguous().transpose(2, 3)
    locations_nc = locations.transpose(0, 1).contiguous().transpose(0, 1)
    weights_nc = weights.transpose(1, 2).contiguous().transpose(1, 2)
    for tensor in (value_nc, locations_nc, weights_nc):
        assert not tensor.is_contiguous()
    output = multi_scale_deform_attn(value_nc, spatial_shapes, level_start, locations_nc, weights_nc,
                                     backend=backend)
    torch.testing.assert_close(output, ms_deform_attn_reference(value, spatial_shapes, locations, weights))


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_queries_forward_and_backward(backend):
    value, spatial_shapes, level_start, locations, weights = make_inputs([(2, 3)], queries=0)
    value.requires_grad_()
    output = multi_scale_deform_attn(value, spatial_shapes, level_start, locations, weights, backend=backend)
    assert output.shape == (2, 0, 2 * 3)
    output.sum().backward()
    assert value.grad.shape == value.shape and (value.grad == 0).all()


@requires_extension
@pytest.mark.parametrize("argument", [0, 3, 4])
def test_gradcheck_cpu_kernel(argument):
    inputs = list(make_inputs([(3, 4), (2, 2), (1, 1)], batch=2, queries=3, heads=2, channels=3, points=2))
    # keep points away from the kinks of bilinear interpolation (integer pixel coordinates)
    inputs[3] = inputs[3].clamp(-0.2, 1.2)
    inputs[argument].requires_grad_()

    def attention(*differentiable):
        return multi_scale_deform_attn(*differentiable, backend="extension")

    assert torch.autograd.gradcheck(attention, tuple(inputs), eps=1e-6, atol=1e-5)


@requires_extension
def test_extension_gradients_match_pytorch_path():
    inputs = list(make_inputs([(5, 6), (3, 3), (1, 1)], queries=7, heads=3, channels=4, points=3, seed=3))
    for index in (0, 3, 4):
        inputs[index].requires_grad_()
    grad_output = torch.randn(2, 7, 12, dtype=torch.float64)
    grads = {}
    for backend in ("pytorch", "extension"):
        output = multi_scale_deform_attn(*inputs, backend=backend)
        grads[backend] = torch.autograd.grad(output, [inputs[0], inputs[3], inputs[4]], grad_output)
    for name, ours, theirs in zip(("value", "locations", "weights"), grads["extension"], grads["pytorch"]):
        torch.testing.assert_close(ours, theirs, msg=name)


@requires_extension
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels", [16, 32, 64, 33])
def test_specialised_head_dims_forward_and_backward(channels, dtype):
    """The CPU kernel has compile-time variants for D = 16, 32, 64 (and a generic one)."""
    inputs = list(make_inputs([(7, 9), (3, 4), (1, 1)], queries=11, heads=2, channels=channels, points=3,
                              dtype=dtype, seed=channels))
    for index in (0, 3, 4):
        inputs[index].requires_grad_()
    grad_output = torch.randn(2, 11, 2 * channels, dtype=dtype)
    results = {}
    for backend in ("pytorch", "extension"):
        output = multi_scale_deform_attn(*inputs, backend=backend)
        grads = torch.autograd.grad(output, [inputs[0], inputs[3], inputs[4]], grad_output)
        results[backend] = (output, *grads)
    tolerance = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else {}
    for ours, theirs in zip(results["extension"], results["pytorch"]):
        torch.testing.assert_close(ours, theirs, **tolerance)


@requires_extension
@pytest.mark.parametrize("threads", [2, 4])
def test_backward_split_into_channel_slices_when_heads_are_fewer_than_threads(threads):
    """One image and one wide head (the folded layout): the kernel's backward splits the head's channels
    over the threads; outputs and gradients stay those of the PyTorch path, and those of the unsplit
    backward (one thread) also with a non-finite location."""
    clean = make_inputs([(7, 9), (3, 4), (1, 1)], batch=1, queries=13, heads=1, channels=64, points=3)
    poisoned = [tensor.clone() for tensor in clean]
    poisoned[3][0, 5, 0, 1, 2, 0] = float("nan")
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        unsplit = _outputs_and_grads(poisoned, "extension")
        torch.set_num_threads(threads)
        split = _outputs_and_grads(poisoned, "extension")
        split_clean = _outputs_and_grads(clean, "extension")
    finally:
        torch.set_num_threads(previous)
    for ours, one_thread in zip(split, unsplit):
        torch.testing.assert_close(ours, one_thread, equal_nan=True)
    for ours, theirs in zip(split_clean, _outputs_and_grads(clean, "pytorch")):
        torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_reduced_precision_is_computed_in_float32(backend):
    inputs = list(make_inputs([(3, 3)], dtype=torch.float32))
    half = [tensor.to(torch.bfloat16) if tensor.is_floating_point() else tensor for tensor in inputs]
    output = multi_scale_deform_attn(*half, backend=backend)
    assert output.dtype == torch.bfloat16
    expected = ms_deform_attn_reference(half[0], inputs[1], half[3], half[4])
    torch.testing.assert_close(output.double(), expected, rtol=1e-2, atol=1e-2)


@requires_extension
def test_opcheck_schema_autograd_and_fake_registrations():
    inputs = list(make_inputs([(3, 4), (1, 1)], queries=4))
    for index in (0, 3, 4):
        inputs[index].requires_grad_()
    torch.library.opcheck(torch.ops.sparse_detr.ms_deform_attn, tuple(inputs))


@requires_extension
def test_kernel_errors_surface():
    value, spatial_shapes, level_start, locations, weights = make_inputs([(2, 2)])
    with pytest.raises(RuntimeError, match="share one dtype"):
        torch.ops.sparse_detr.ms_deform_attn(value, spatial_shapes, level_start, locations.float(), weights)
    output = torch.ops.sparse_detr.ms_deform_attn(value, spatial_shapes, level_start, locations, weights)
    backward = torch.ops.sparse_detr.ms_deform_attn_backward
    with pytest.raises(RuntimeError, match=r"grad_output must have shape \(N, Q, M \* D\)"):
        backward(value, spatial_shapes, level_start, locations, weights, output[:, :-1])
    with pytest.raises(RuntimeError, match="grad_output must have the dtype and device of value"):
        backward(value, spatial_shapes, level_start, locations, weights, output.float())


def _bad(**changes):
    names = ("value", "spatial_shapes", "level_start_index", "sampling_locations", "attention_weights")
    inputs = dict(zip(names, make_inputs([(2, 3), (1, 2)])))
    inputs.update(changes)
    return inputs


@pytest.mark.parametrize(
    "inputs, message",
    [
        (_bad(value=torch.zeros(2, 8, 6)), r"value must have shape \(N, S, M, D\)"),
        (_bad(value=torch.zeros(2, 9, 2, 3, dtype=torch.float64)),
         r"value must have shape .* = 8 for spatial_shapes"),
        (_bad(value=torch.zeros(2, 8, 2, 3, dtype=torch.int64)), "value must be a floating point"),
        (_bad(spatial_shapes=torch.tensor([[2, 3], [1, 2]], dtype=torch.int32)),
         "spatial_shapes must have dtype"),
        (_bad(spatial_shapes=torch.tensor([2, 3, 1, 2])), r"spatial_shapes must have shape \(L, 2\)"),
        (_bad(level_start_index=torch.tensor([0])), r"level_start_index must have shape \(L,\) = \(2,\)"),
        (_bad(level_start_index=torch.tensor([0, 5])), r"level_start_index must be \[0, 6\]"),
        (_bad(sampling_locations=torch.zeros(2, 5, 2, 2, 2)), r"sampling_locations must have shape"),
        (_bad(sampling_locations=torch.zeros(2, 5, 3, 2, 2, 2)),
         r"sampling_locations must have shape .*\(2, 5, 2"),
        (_bad(attention_weights=torch.zeros(2, 5, 2, 2, 3)),
         r"attention_weights must have shape .*\(2, 5, 2, 2, 2\)"),
    ],
)
def test_bad_inputs_raise_value_error(inputs, message):
    with pytest.raises(ValueError, match=message):
        multi_scale_deform_attn(**inputs, backend="pytorch")


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend must be one of"):
        multi_scale_deform_attn(*make_inputs([(2, 2)]), backend="cuda")


def test_auto_falls_back_with_one_warning_when_not_built(monkeypatch):
    monkeypatch.setattr(_ext, "_C", None)
    monkeypatch.setattr(_ext, "EXTENSION_IMPORT_ERROR", ImportError("simulated"))
    monkeypatch.setattr(ms_deform_attn_function, "_fallback_warned", False)
    inputs = make_inputs([(2, 2)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = multi_scale_deform_attn(*inputs)
        multi_scale_deform_attn(*inputs)
    messages = [str(warning.message) for warning in caught if "sparse_detr._C" in str(warning.message)]
    assert len(messages) == 1 and "pip install --no-build-isolation -e ." in messages[0]
    torch.testing.assert_close(first, multi_scale_deform_attn(*inputs, backend="pytorch"))
    with pytest.raises(ImportError, match="pip install --no-build-isolation -e ."):
        multi_scale_deform_attn(*inputs, backend="extension")


@requires_extension
def test_extension_reports_how_it_was_built():
    info = _ext.extension_info()
    assert info["built"] and info["compiled_with_torch"] == torch.__version__
    assert isinstance(info["with_cuda"], bool) and isinstance(info["cuda_arch_list"], str)
    assert info["with_cuda"] or info["cuda_arch_list"] == ""


POISONED = (0, 1, 1, 0, 1)  # (batch, query, head, level, point) of the sample made non-finite


def _outputs_and_grads(inputs, backend):
    inputs = [tensor.detach().clone() for tensor in inputs]
    for index in (0, 3, 4):
        inputs[index].requires_grad_()
    output = multi_scale_deform_attn(*inputs, backend=backend)
    grad_output = torch.linspace(-1, 1, output.numel(), dtype=output.dtype).view_as(output)
    return (output, *torch.autograd.grad(output, [inputs[0], inputs[3], inputs[4]], grad_output))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("coordinate", [0, 1])
def test_non_finite_location_gives_nan_for_its_query_and_head_only(backend, bad, coordinate):
    """One behaviour for both backends (grid_sample's): NaN out, NaN weight gradient, nothing scattered."""
    inputs = list(make_inputs([(3, 4), (2, 2)], queries=4, heads=2, channels=3, margin=0.1))
    clean = [tensor.clone() for tensor in inputs]
    clean[3][POISONED] = 5.0  # the same sample far outside the map: it reads nothing
    inputs[3][POISONED + (coordinate,)] = bad
    output, grad_value, grad_locations, grad_weights = _outputs_and_grads(inputs, backend)
    expected = _outputs_and_grads(clean, backend)

    batch, query, head = POISONED[:3]
    poisoned_output = torch.zeros_like(output, dtype=torch.bool).view(2, 4, 2, 3)
    poisoned_output[batch, query, head] = True
    poisoned_output = poisoned_output.view_as(output)
    assert output[poisoned_output].isnan().all()
    torch.testing.assert_close(output[~poisoned_output], expected[0][~poisoned_output])
    torch.testing.assert_close(grad_value, expected[1])  # finite: the sample scatters nothing
    assert grad_weights[POISONED].isnan()
    assert not grad_locations[POISONED].isfinite().all()
    others = torch.ones_like(grad_weights, dtype=torch.bool)
    others[POISONED] = False
    torch.testing.assert_close(grad_weights[others], expected[3][others])
    torch.testing.assert_close(grad_locations[others], expected[2][others])


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_finite_weight_of_an_outside_sample_gives_nan(backend):
    inputs = list(make_inputs([(3, 4)], queries=2, heads=1, channels=2, margin=0.1))
    inputs[3][0, 0, 0, 0, 0] = -3.0  # outside: reads nothing
    inputs[4][0, 0, 0, 0, 0] = float("nan")
    output, grad_value, grad_locations, grad_weights = _outputs_and_grads(inputs, backend)
    assert output[0, 0].isnan().all() and output[0, 1:].isfinite().all() and output[1].isfinite().all()
    assert grad_value.isfinite().all() and grad_weights.isfinite().all()
    assert grad_weights[0, 0, 0, 0, 0] == 0  # what the sample read
    assert grad_locations[0, 0, 0, 0, 0].isnan().all()
    grad_locations[0, 0, 0, 0, 0] = 0
    assert grad_locations.isfinite().all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_levels_are_refused(backend):
    value, _, _, locations, weights = make_inputs([(2, 2)])
    with pytest.raises(ValueError, match="at least one level"):
        multi_scale_deform_attn(value[:, :0], torch.zeros(0, 2, dtype=torch.int64),
                                torch.zeros(0, dtype=torch.int64), locations[:, :, :, :0],
                                weights[:, :, :, :0], backend=backend)


@requires_extension
def test_kernel_refuses_zero_levels():
    value, _, _, locations, weights = make_inputs([(2, 2)])
    with pytest.raises(RuntimeError, match="at least one level"):
        torch.ops.sparse_detr.ms_deform_attn(value[:, :0], torch.zeros(0, 2, dtype=torch.int64),
                                             torch.zeros(0, dtype=torch.int64), locations[:, :, :, :0],
                                             weights[:, :, :, :0])
