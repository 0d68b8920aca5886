// Entry point of sparse_detr._C: operator schemas (torch.ops.sparse_detr.*) and build information.
// Kernels register themselves per device in csrc/msda/ms_deform_attn_{cpu.cpp,cuda.cu}.
#include <torch/extension.h>
#include <torch/library.h>

#include <string>

// setup.py passes TORCH_CUDA_ARCH_LIST with spaces/semicolons replaced by '_' (a macro-safe token).
#define SPARSE_DETR_STRINGIFY_(x) #x
#define SPARSE_DETR_STRINGIFY(x) SPARSE_DETR_STRINGIFY_(x)

namespace {

bool with_cuda() {
#ifdef WITH_CUDA
  return true;
#else
  return false;
#endif
}

std::string cuda_arch_list() {
#if defined(WITH_CUDA) && defined(SPARSE_DETR_CUDA_ARCH_LIST)
  std::string archs = SPARSE_DETR_STRINGIFY(SPARSE_DETR_CUDA_ARCH_LIST);
  for (auto& c : archs) {
    if (c == '_') c = ' ';
  }
  return archs;
#else
  return "";
#endif
}

std::string compiled_with_torch() { return SPARSE_DETR_STRINGIFY(SPARSE_DETR_TORCH_VERSION); }

}  // namespace

TORCH_LIBRARY(sparse_detr, m) {
  m.def(
      "ms_deform_attn(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
      "Tensor sampling_locations, Tensor attention_weights) -> Tensor");
  m.def(
      "ms_deform_attn_backward(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
      "Tensor sampling_locations, Tensor attention_weights, Tensor grad_output) "
      "-> (Tensor, Tensor, Tensor)");
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.doc() = "Sparse DETR kernels; the ops live in torch.ops.sparse_detr";
  module.def("with_cuda", &with_cuda, "whether the CUDA kernels were compiled");
  module.def("cuda_arch_list", &cuda_arch_list,
             "TORCH_CUDA_ARCH_LIST used at build time ('default' = unset, '' = CPU-only build)");
  module.def("compiled_with_torch", &compiled_with_torch, "torch version the extension was built against");
}
