#include "engine/tensor.h"

#include <cstdlib>
#include <cstring>
#include <new>

#include <fmt/format.h>

namespace gpugrid {

int64_t num_elements(const shape_t& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

bool checked_num_elements(const shape_t& shape, int64_t max_elements, int64_t* out) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return false;
    if (d != 0 && n > max_elements / d) return false;
    n *= d;
  }
  if (n > max_elements) return false;
  *out = n;
  return true;
}

std::string shape_str(const shape_t& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

std::shared_ptr<std::byte> allocate_cpu_bytes(size_t bytes, bool zero) {
  size_t rounded = (bytes + 63) / 64 * 64;
  if (rounded == 0) rounded = 64;
  void* p = std::aligned_alloc(64, rounded);
  if (!p) return nullptr;
  if (zero) std::memset(p, 0, rounded);
  return std::shared_ptr<std::byte>(static_cast<std::byte*>(p), [](std::byte* q) { std::free(q); });
}

tensor tensor::zeros(dtype type, shape_t shape) {
  size_t bytes = static_cast<size_t>(num_elements(shape)) * dtype_size(type);
  auto storage = allocate_cpu_bytes(bytes);
  if (!storage) throw std::bad_alloc();
  return tensor(type, std::move(shape), std::move(storage));
}

tensor tensor::clone() const {
  if (seq_ || none_) return *this;  // sequences are immutable; an empty optional holds nothing
  tensor t = zeros(type_, shape_);
  if (bytes()) std::memcpy(t.raw(), raw(), bytes());
  return t;
}

double tensor::as_double(int64_t i) const {
  double v = 0;
  dispatch_all(type_, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_same_v<T, half> || std::is_same_v<T, bfloat16>) {
      v = static_cast<float>(data<T>()[i]);
    } else {
      v = static_cast<double>(data<T>()[i]);
    }
  });
  return v;
}

int64_t tensor::as_int64(int64_t i) const {
  int64_t v = 0;
  dispatch_all(type_, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_same_v<T, half> || std::is_same_v<T, bfloat16>) {
      v = static_cast<int64_t>(static_cast<float>(data<T>()[i]));
    } else {
      v = static_cast<int64_t>(data<T>()[i]);
    }
  });
  return v;
}

std::vector<int64_t> tensor::to_int64_vector() const {
  std::vector<int64_t> out(static_cast<size_t>(numel()));
  for (int64_t i = 0; i < numel(); ++i) out[static_cast<size_t>(i)] = as_int64(i);
  return out;
}

tensor tensor::sequence(dtype elem, std::vector<tensor> items) {
  tensor t;
  t.type_ = elem;
  t.seq_ = std::make_shared<const std::vector<tensor>>(std::move(items));
  return t;
}

tensor tensor::none(dtype elem) {
  tensor t;
  t.type_ = elem;
  t.none_ = true;
  return t;
}

}  // namespace gpugrid
