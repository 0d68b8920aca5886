"""CUDA kernel of multi-scale deformable attention (skipped without a GPU or without CUDA kernels)."""

import pytest
import torch

from sparse_detr import _ext
from sparse_detr.layers import MSDeformAttn, multi_scale_deform_attn
from tests.helpers.msda_reference import level_start_index_of, ms_deform_attn_reference

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
    pytest.mark.skipif(
        not _ext.extension_info()["with_cuda"],
        reason="sparse_detr._C was built without CUDA kernels (rebuild with a GPU or FORCE_CUDA=1)",
    ),
]


def make_inputs(dtype=torch.float64, queries=50, seed=0):
    generator = torch.Generator().manual_seed(seed)
    spatial_shapes = torch.tensor([(12, 15), (6, 8), (3, 4), (1, 1)])
    tokens = int(spatial_shapes.prod(1).sum())
    value = torch.randn(2, tokens, 4, 8, generator=generator, dtype=dtype)
    locations = torch.rand(2, queries, 4, 4, 3, 2, generator=generator, dtype=dtype) * 1.4 - 0.2
    weights = torch.rand(2, queries, 4, 4, 3, generator=generator, dtype=dtype)
    return [value, spatial_shapes, level_start_index_of(spatial_shapes), locations, weights]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu_forward_and_backward(dtype):
    cpu_inputs = make_inputs(dtype)
    cuda_inputs = [tensor.cuda() for tensor in cpu_inputs]
    for inputs in (cpu_inputs, cuda_inputs):
        for index in (0, 3, 4):
            inputs[index].requires_grad_()
    grad_output = torch.randn(2, 50, 32, dtype=dtype)
    results = []
    for inputs, grad in ((cpu_inputs, grad_output), (cuda_inputs, grad_output.cuda())):
        output = multi_scale_deform_attn(*inputs, backend="extension")
        grads = torch.autograd.grad(output, [inputs[0], inputs[3], inputs[4]], grad)
        results.append([output, *grads])
    tolerance = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else {}
    for cpu_result, cuda_result in zip(*results):
        torch.testing.assert_close(cuda_result.cpu(), cpu_result, **tolerance)


def test_cuda_handles_zero_queries():
    inputs = [tensor.cuda() for tensor in make_inputs(queries=0)]
    inputs[0].requires_grad_()
    output = multi_scale_deform_attn(*inputs, backend="extension")
    assert output.shape == (2, 0, 32)
    output.sum().backward()
    assert (inputs[0].grad == 0).all()


@pytest.mark.parametrize("argument", [0, 3, 4])
def test_gradcheck_cuda_kernel(argument):
    inputs = [tensor.cuda() for tensor in make_inputs(queries=4)]
    inputs[argument].requires_grad_()
    # atomicAdd makes the order of the grad_value sums, hence their last bits, vary between runs
    assert torch.autograd.gradcheck(
        lambda *args: multi_scale_deform_attn(*args, backend="extension"), tuple(inputs), eps=1e-6, atol=1e-5,
        nondet_tol=1e-12,
    )


@pytest.mark.parametrize("amp_dtype", [torch.float16, torch.bfloat16])
def test_amp_half_inputs_run_in_float32(amp_dtype):
    module = MSDeformAttn(32, 4, 4, 3, backend="extension").cuda()
    inputs = make_inputs(torch.float32)
    spatial_shapes, level_start = inputs[1].cuda(), inputs[2].cuda()
    tokens = int(spatial_shapes.prod(1).sum())
    query = torch.randn(2, 10, 32, device="cuda")
    value = torch.randn(2, tokens, 32, device="cuda")
    reference = torch.rand(2, 10, 4, 2, device="cuda")
    with torch.autocast("cuda", dtype=amp_dtype):
        output = module(query, reference, value, spatial_shapes, level_start)
    output.float().sum().backward()
    expected = module(query, reference, value, spatial_shapes, level_start)
    tolerance = 2e-2 if amp_dtype == torch.float16 else 6e-2  # bfloat16 keeps 8 bits of mantissa
    torch.testing.assert_close(output.float(), expected, rtol=tolerance, atol=tolerance)
    assert module.value_proj.weight.grad is not None and torch.isfinite(module.value_proj.weight.grad).all()


def _inputs(level_shapes, batch=2, queries=7, heads=3, channels=4, points=2, dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    spatial_shapes = torch.tensor(level_shapes)
    tokens = int(spatial_shapes.prod(1).sum())
    levels = len(level_shapes)
    value = torch.randn(batch, tokens, heads, channels, generator=generator, dtype=dtype)
    locations = torch.rand(batch, queries, heads, levels, points, 2, generator=generator, dtype=dtype)
    locations = locations * 1.6 - 0.3
    weights = torch.rand(batch, queries, heads, levels, points, generator=generator, dtype=dtype)
    return [value, spatial_shapes, level_start_index_of(spatial_shapes), locations, weights]


def _forward_backward(inputs, device):
    inputs = [tensor.detach().clone().to(device) for tensor in inputs]
    for index in (0, 3, 4):
        inputs[index].requires_grad_()
    output = multi_scale_deform_attn(*inputs, backend="extension")
    grad_output = torch.linspace(-1, 1, output.numel(), dtype=output.dtype, device=device).view_as(output)
    grads = torch.autograd.grad(output, [inputs[0], inputs[3], inputs[4]], grad_output)
    return [tensor.cpu() for tensor in (output, *grads)]


@pytest.mark.parametrize("channels", [1, 3, 16, 32, 33, 64, 100])
def test_every_head_dim_matches_reference_and_cpu(channels):
    """The backward's lane groups (D rounded up to a power of two, at most 32) for any D."""
    inputs = _inputs([(9, 7), (4, 5), (2, 2), (1, 1)], queries=13, channels=channels, points=3, seed=channels)
    cuda = _forward_backward(inputs, "cuda")
    torch.testing.assert_close(cuda[0], ms_deform_attn_reference(inputs[0], inputs[1], inputs[3], inputs[4]))
    for ours, theirs in zip(cuda, _forward_backward(inputs, "cpu")):
        torch.testing.assert_close(ours, theirs)


def test_one_by_one_levels():
    inputs = _inputs([(1, 1), (1, 1), (1, 1)], queries=9)
    cuda = _forward_backward(inputs, "cuda")
    torch.testing.assert_close(cuda[0], ms_deform_attn_reference(inputs[0], inputs[1], inputs[3], inputs[4]))
    for ours, theirs in zip(cuda, _forward_backward(inputs, "cpu")):
        torch.testing.assert_close(ours, theirs)


def test_non_contiguous_inputs():
    value, spatial_shapes, level_start, locations, weights = [
        tensor.cuda() for tensor in _inputs([(4, 3), (2, 2)], heads=3, channels=4)
    ]
    value_nc = value.transpose(2, 3).contiguous().transpose(2, 3)
    locations_nc = locations.transpose(0, 1).contiguous().transpose(0, 1)
    weights_nc = weights.transpose(1, 2).contiguous().transpose(1, 2)
    for tensor in (value_nc, locations_nc, weights_nc):
        assert not tensor.is_contiguous()
    output = multi_scale_deform_attn(value_nc, spatial_shapes, level_start, locations_nc, weights_nc,
                                     backend="extension")
    expected = ms_deform_attn_reference(value.cpu(), spatial_shapes.cpu(), locations.cpu(), weights.cpu())
    torch.testing.assert_close(output.cpu(), expected)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_and_bfloat16_inputs(dtype):
    inputs = _inputs([(5, 6), (2, 3)], dtype=torch.float32)
    reduced = [tensor.to(dtype).cuda() if tensor.is_floating_point() else tensor.cuda() for tensor in inputs]
    output = multi_scale_deform_attn(*reduced, backend="extension")
    assert output.dtype == dtype
    expected = ms_deform_attn_reference(reduced[0].cpu(), inputs[1], reduced[3].cpu(), reduced[4].cpu())
    torch.testing.assert_close(output.cpu().double(), expected, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_inputs_behave_as_on_the_cpu(bad):
    inputs = _inputs([(3, 4), (2, 2)], queries=4, heads=2, channels=3)
    inputs[3][0, 1, 1, 0, 1, 0] = bad  # a location
    inputs[3][1, 2, 0, 1, 0] = -3.0  # a sample outside the map ...
    inputs[4][1, 2, 0, 1, 0] = bad  # ... with a non-finite weight
    cuda, cpu = _forward_backward(inputs, "cuda"), _forward_backward(inputs, "cpu")
    assert cuda[0].isnan().any()
    for ours, theirs in zip(cuda, cpu):
        torch.testing.assert_close(ours, theirs, equal_nan=True)


def test_zero_levels_refused_by_the_kernel():
    value, _, _, locations, weights = [tensor.cuda() for tensor in _inputs([(2, 2)])]
    empty_shapes = torch.zeros(0, 2, dtype=torch.int64, device="cuda")
    with pytest.raises(RuntimeError, match="at least one level"):
        torch.ops.sparse_detr.ms_deform_attn(value[:, :0], empty_shapes, empty_shapes[:, 0],
                                             locations[:, :, :, :0], weights[:, :, :, :0])
