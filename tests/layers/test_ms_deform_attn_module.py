"""MSDeformAttn: shapes, sampling geometry, initialisation, padding, backends and FLOP counting."""

import math
import warnings

import pytest
import torch
from fvcore.nn import FlopCountAnalysis

from sparse_detr import _ext
from sparse_detr.layers import MSDeformAttn
from sparse_detr.layers.flops import add_msda_flop_handle, msda_flop_count
from tests.helpers.msda_reference import level_start_index_of

requires_extension = pytest.mark.skipif(
    not _ext.extension_available(),
    reason="sparse_detr._C is not built: run `pip install --no-build-isolation -e .`",
)
LEVEL_SHAPES = [(6, 8), (3, 4), (1, 1)]
EMBED_DIM, HEADS, POINTS = 16, 4, 3


def make_module(backend="pytorch", seed=0):
    torch.manual_seed(seed)
    module = MSDeformAttn(EMBED_DIM, len(LEVEL_SHAPES), HEADS, POINTS, backend=backend)
    with torch.no_grad():  # make offsets and weights depend on the query (they are 0 at init)
        module.sampling_offsets.weight.normal_(std=0.1)
        module.attention_weights.weight.normal_(std=0.1)
    return module


def make_inputs(batch=2, queries=5, box_references=False, seed=1):
    generator = torch.Generator().manual_seed(seed)
    spatial_shapes = torch.tensor(LEVEL_SHAPES)
    tokens = int(spatial_shapes.prod(1).sum())
    reference = torch.rand(batch, queries, len(LEVEL_SHAPES), 4 if box_references else 2, generator=generator)
    return dict(
        query=torch.randn(batch, queries, EMBED_DIM, generator=generator),
        reference_points=reference,
        value=torch.randn(batch, tokens, EMBED_DIM, generator=generator),
        spatial_shapes=spatial_shapes,
        level_start_index=level_start_index_of(spatial_shapes),
    )


@pytest.mark.parametrize("box_references", [False, True])
def test_shapes_and_returned_sampling(box_references):
    module = make_module()
    inputs = make_inputs(box_references=box_references)
    output, locations, weights = module(**inputs, return_sampling=True)
    assert output.shape == (2, 5, EMBED_DIM)
    assert locations.shape == (2, 5, HEADS, len(LEVEL_SHAPES), POINTS, 2)
    assert weights.shape == (2, 5, HEADS, len(LEVEL_SHAPES), POINTS)
    torch.testing.assert_close(weights.sum(dim=(-1, -2)), torch.ones(2, 5, HEADS))
    torch.testing.assert_close(module(**inputs), output)


def test_sampling_locations_follow_the_reference_geometry():
    module = make_module()
    for box_references in (False, True):
        inputs = make_inputs(box_references=box_references)
        _, locations, _ = module(**inputs, return_sampling=True)
        offsets = module.sampling_offsets(inputs["query"]).view(2, 5, HEADS, len(LEVEL_SHAPES), POINTS, 2)
        reference = inputs["reference_points"][:, :, None, :, None, :]
        if box_references:
            expected = reference[..., :2] + offsets / POINTS * reference[..., 2:] * 0.5
        else:
            width_height = torch.tensor([[w, h] for h, w in LEVEL_SHAPES], dtype=torch.float32)
            expected = reference + offsets / width_height[:, None, :]
        torch.testing.assert_close(locations, expected)


def test_initialisation_matches_deformable_detr():
    module = MSDeformAttn(256, 4, 8, 4)
    # Deformable DETR: head m points along angle 2*pi*m/8, scaled so the larger |coordinate| is 1,
    # point p at distance p + 1, for every level.
    bias = module.sampling_offsets.bias.view(8, 4, 4, 2)
    for head in range(8):
        angle = 2 * math.pi * head / 8
        direction = torch.tensor([math.cos(angle), math.sin(angle)])
        direction = direction / direction.abs().max()
        for point in range(4):
            torch.testing.assert_close(bias[head, :, point], (point + 1) * direction.expand(4, 2))
    assert (module.sampling_offsets.weight == 0).all()
    assert (module.attention_weights.weight == 0).all() and (module.attention_weights.bias == 0).all()
    assert (module.value_proj.bias == 0).all() and (module.output_proj.bias == 0).all()
    assert module.value_proj.weight.std() > 0 and module.output_proj.weight.std() > 0
    names = {name for name, _ in module.named_parameters()}
    assert names == {f"{layer}.{kind}" for layer in ("sampling_offsets", "attention_weights", "value_proj",
                                                      "output_proj") for kind in ("weight", "bias")}


def test_padding_mask_zeroes_padded_values():
    module = make_module()
    inputs = make_inputs()
    padding = torch.zeros(2, inputs["value"].shape[1], dtype=torch.bool)
    padding[1, 10:30] = True
    padding[0, -1] = True
    output = module(**inputs, value_padding_mask=padding)
    changed = dict(inputs, value=inputs["value"].masked_fill(padding[..., None], 1e3))
    torch.testing.assert_close(module(**changed, value_padding_mask=padding), output)
    assert not torch.allclose(module(**changed), output)


@pytest.mark.parametrize("backend", ["pytorch", pytest.param("extension", marks=requires_extension)])
@pytest.mark.parametrize("box_references", [False, True])
def test_projecting_after_sampling_is_the_same_function(backend, box_references, monkeypatch):
    module = make_module(backend).double()
    with torch.no_grad():
        module.value_proj.bias.normal_()  # the bias must reach exactly the in-map, non-padding samples
    inputs = make_inputs(box_references=box_references)
    inputs = {k: v.double() if v.is_floating_point() else v for k, v in inputs.items()}
    inputs["reference_points"] = inputs["reference_points"] * 1.6 - 0.3  # some samples leave the map
    padding = torch.zeros(2, inputs["value"].shape[1], dtype=torch.bool)
    padding[1, 20:] = True
    results = []
    for after in (False, True):
        monkeypatch.setattr(module, "projects_after_sampling", lambda q, s, after=after: after)
        query = inputs["query"].clone().requires_grad_()
        value = inputs["value"].clone().requires_grad_()
        output, locations, weights = module(
            **dict(inputs, query=query, value=value), value_padding_mask=padding, return_sampling=True
        )
        grads = torch.autograd.grad(output.square().sum(), [query, value, *module.parameters()])
        results.append((output, locations, weights, *grads))
    for before, after in zip(*results):
        torch.testing.assert_close(after, before, rtol=1e-10, atol=1e-10)


@torch.no_grad()
def test_projection_after_sampling_is_chosen_for_few_queries_only():
    """Where benchmarks/bench_projection_order.py measures the folded order faster (rho <= ~0.15 in
    inference, <= ~0.08 in training)."""
    module = MSDeformAttn(256, 4, 8, 4)
    assert module.projects_after_sampling(num_queries=300, num_tokens=20000)  # decoder cross-attention
    assert module.projects_after_sampling(num_queries=2000, num_tokens=20000)  # encoder, rho = 0.1
    assert not module.projects_after_sampling(num_queries=4000, num_tokens=20000)  # encoder, rho = 0.2
    assert not module.projects_after_sampling(num_queries=20000, num_tokens=20000)  # dense encoder
    assert not module.projects_after_sampling(num_queries=300, num_tokens=600)  # tiny images
    with torch.enable_grad():  # CPU training too, where the backward makes the folded order dearer
        assert module.projects_after_sampling(num_queries=300, num_tokens=20000)
        assert module.projects_after_sampling(num_queries=1000, num_tokens=20000)
        assert not module.projects_after_sampling(num_queries=2000, num_tokens=20000)


@torch.no_grad()
def test_flop_counts_trace_the_papers_order():
    """FLOP counters trace the model with the JIT tracer: they see the paper's layers (values projected
    first), so the counts compare with the paper's."""
    module = MSDeformAttn(256, 4, 8, 4)
    answers = []

    def probe(x):
        answers.append(module.projects_after_sampling(num_queries=300, num_tokens=20000))
        return x + 1

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(probe, torch.ones(1), check_trace=False)
    assert answers == [False]


@requires_extension
@pytest.mark.parametrize("box_references", [False, True])
def test_extension_and_pytorch_backends_agree(box_references):
    module = make_module()
    inputs = make_inputs(box_references=box_references)
    expected = module(**inputs)
    module.backend = "extension"
    torch.testing.assert_close(module(**inputs), expected, rtol=1e-5, atol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        MSDeformAttn(30, 4, 8, 4)
    with pytest.raises(ValueError, match="backend must be one of"):
        MSDeformAttn(backend="triton")
    module = make_module()
    inputs = make_inputs()
    reference_message = r"reference_points must have shape \(N, Q, L, 2\) or \(N, Q, L, 4\)"
    with pytest.raises(ValueError, match=reference_message):
        module(**dict(inputs, reference_points=torch.rand(2, 5, 2, 2)))
    with pytest.raises(ValueError, match=r"query must have shape \(N, Q, C=16\)"):
        module(**dict(inputs, query=torch.rand(2, 5, 8)))
    with pytest.raises(ValueError, match=r"value_padding_mask must be a bool tensor of shape \(N, S\)"):
        module(**inputs, value_padding_mask=torch.zeros(2, 3, dtype=torch.bool))


@pytest.mark.parametrize("backend", ["pytorch", pytest.param("extension", marks=requires_extension)])
def test_flop_count_of_the_op(backend):
    module = make_module(backend).eval()
    inputs = make_inputs(batch=1, queries=7)
    args = tuple(inputs.values())
    analysis = add_msda_flop_handle(FlopCountAnalysis(module, args))
    analysis.unsupported_ops_warnings(False)
    by_operator = analysis.by_operator()
    op_name = "ms_deform_attn" if backend == "extension" else "grid_sampler"
    head_dim = EMBED_DIM // HEADS
    expected = msda_flop_count((1, inputs["value"].shape[1], HEADS, head_dim),
                               (1, 7, HEADS, len(LEVEL_SHAPES), POINTS, 2))
    assert expected == 4 * 7 * HEADS * len(LEVEL_SHAPES) * POINTS * head_dim
    assert by_operator[op_name] == expected
