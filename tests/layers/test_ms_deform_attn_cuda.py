"""CUDA kernel of multi-scale deformable attention (skipped without a GPU or without CUDA kernels)."""

import pytest
import torch
from msda_reference import level_start_index_of

from sparse_detr import _ext
from sparse_detr.layers import MSDeformAttn, multi_scale_deform_attn

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


def test_amp_half_inputs_run_in_float32():
    module = MSDeformAttn(32, 4, 4, 3, backend="extension").cuda()
    inputs = make_inputs(torch.float32)
    spatial_shapes, level_start = inputs[1].cuda(), inputs[2].cuda()
    tokens = int(spatial_shapes.prod(1).sum())
    query = torch.randn(2, 10, 32, device="cuda")
    value = torch.randn(2, tokens, 32, device="cuda")
    reference = torch.rand(2, 10, 4, 2, device="cuda")
    with torch.autocast("cuda", dtype=torch.float16):
        output = module(query, reference, value, spatial_shapes, level_start)
    output.float().sum().backward()
    expected = module(query, reference, value, spatial_shapes, level_start)
    torch.testing.assert_close(output.float(), expected, rtol=2e-2, atol=2e-2)
    assert module.value_proj.weight.grad is not None and torch.isfinite(module.value_proj.weight.grad).all()
