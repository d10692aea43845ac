// Reading and writing tensors: .npy (NumPy), ONNX TensorProto (.pb), raw little-endian bytes.
// These parse untrusted files: every size is checked before anything is allocated.
#include "engine/tensor_io.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>

#include "engine/tensor_proto.h"

namespace gpugrid {

namespace {

constexpr int64_t max_io_bytes = int64_t{1} << 34;  // 16 GiB

bool npy_descr(const std::string& d, dtype* t, bool* swap) {
  if (d.size() < 3) return false;
  char order = d[0];
  std::string code = d.substr(1);
  *swap = order == '>';
  if (order != '<' && order != '>' && order != '|' && order != '=') return false;
  struct row { const char* code; dtype t; };
  static const row rows[] = {{"f2", dtype::f16}, {"f4", dtype::f32}, {"f8", dtype::f64}, {"i1", dtype::i8},
                             {"i2", dtype::i16}, {"i4", dtype::i32}, {"i8", dtype::i64}, {"u1", dtype::u8},
                             {"u2", dtype::u16}, {"u4", dtype::u32}, {"u8", dtype::u64}, {"b1", dtype::boolean}};
  for (const auto& r : rows) {
    if (code == r.code) {
      *t = r.t;
      if (dtype_size(r.t) == 1) *swap = false;
      return true;
    }
  }
  return false;
}

const char* npy_code(dtype t) {
  switch (t) {
    case dtype::f16: return "<f2";
    case dtype::f32: return "<f4";
    case dtype::f64: return "<f8";
    case dtype::i8: return "|i1";
    case dtype::i16: return "<i2";
    case dtype::i32: return "<i4";
    case dtype::i64: return "<i8";
    case dtype::u8: return "|u1";
    case dtype::u16: return "<u2";
    case dtype::u32: return "<u4";
    case dtype::u64: return "<u8";
    case dtype::boolean: return "|b1";
    default: return nullptr;
  }
}

// A tiny parser for the header dict: {'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), }
class dict_parser {
 public:
  explicit dict_parser(const std::string& s) : s_(s) {}
  bool parse(std::string* descr, bool* fortran, shape_t* shape, std::string* err) {
    bool have_d = false, have_f = false, have_s = false;
    skip();
    if (!eat('{')) return fail(err, "the header is not a dict");
    for (;;) {
      skip();
      if (eat('}')) break;
      std::string key;
      if (!str(&key)) return fail(err, "a header key is not a string");
      skip();
      if (!eat(':')) return fail(err, "':' missing in the header");
      skip();
      if (key == "descr") {
        if (!str(descr)) return fail(err, "'descr' is not a string (structured dtypes are not supported)");
        have_d = true;
      } else if (key == "fortran_order") {
        if (word("True")) *fortran = true;
        else if (word("False")) *fortran = false;
        else return fail(err, "'fortran_order' is not True or False");
        have_f = true;
      } else if (key == "shape") {
        if (!tuple(shape)) return fail(err, "'shape' is not a tuple of non-negative integers");
        have_s = true;
      } else {
        return fail(err, "unknown header key '" + key + "'");
      }
      skip();
      if (eat(',')) continue;
      skip();
      if (eat('}')) break;
      return fail(err, "',' or '}' expected in the header");
    }
    if (!have_d || !have_f || !have_s) return fail(err, "the header lacks descr, fortran_order or shape");
    return true;
  }

 private:
  bool fail(std::string* err, const std::string& m) { *err = m; return false; }
  void skip() { while (p_ < s_.size() && (s_[p_] == ' ' || s_[p_] == '\n' || s_[p_] == '\t')) ++p_; }
  bool eat(char c) { if (p_ < s_.size() && s_[p_] == c) { ++p_; return true; } return false; }
  bool word(const char* w) {
    size_t n = std::strlen(w);
    if (s_.compare(p_, n, w) == 0) { p_ += n; return true; }
    return false;
  }
  bool str(std::string* out) {
    if (p_ >= s_.size() || (s_[p_] != '\'' && s_[p_] != '"')) return false;
    char q = s_[p_++];
    size_t start = p_;
    while (p_ < s_.size() && s_[p_] != q) ++p_;
    if (p_ >= s_.size()) return false;
    *out = s_.substr(start, p_ - start);
    ++p_;
    return true;
  }
  bool tuple(shape_t* out) {
    out->clear();
    if (!eat('(')) return false;
    for (;;) {
      skip();
      if (eat(')')) return true;
      if (p_ >= s_.size() || !std::isdigit(static_cast<unsigned char>(s_[p_]))) return false;
      int64_t v = 0;
      while (p_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[p_]))) {
        if (v > (int64_t{1} << 50)) return false;
        v = v * 10 + (s_[p_++] - '0');
      }
      if (p_ < s_.size() && s_[p_] == 'L') ++p_;  // Python 2 longs
      out->push_back(v);
      skip();
      if (eat(',')) continue;
      skip();
      if (eat(')')) return true;
      return false;
    }
  }
  const std::string& s_;
  size_t p_ = 0;
};

void byteswap(void* data, size_t esize, int64_t n) {
  auto* p = static_cast<uint8_t*>(data);
  for (int64_t i = 0; i < n; ++i) {
    for (size_t a = 0, b = esize - 1; a < b; ++a, --b) std::swap(p[i * esize + a], p[i * esize + b]);
  }
}

expected<std::string> read_all(const std::string& path) {
  if (path == "-") {
    std::string s((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
    return s;
  }
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return invalid_input("cannot read '{}': it is a directory", path);
  std::ifstream in(path, std::ios::binary);
  if (!in) return invalid_input("cannot read '{}': {}", path, std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return invalid_input("cannot read '{}': {}", path, std::strerror(errno));
  return ss.str();
}

std::string extension(const std::string& path) {
  auto e = std::filesystem::path(path).extension().string();
  for (auto& c : e) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return e;
}

}  // namespace

expected<tensor> read_npy(const std::string& bytes, const std::string& what) {
  if (bytes.size() < 10 || std::memcmp(bytes.data(), "\x93NUMPY", 6) != 0)
    return invalid_input("{}: not a .npy file (bad magic)", what);
  uint8_t major = static_cast<uint8_t>(bytes[6]);
  size_t header_len, offset;
  if (major == 1) {
    header_len = static_cast<uint8_t>(bytes[8]) | (static_cast<size_t>(static_cast<uint8_t>(bytes[9])) << 8);
    offset = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) return invalid_input("{}: truncated .npy header", what);
    header_len = 0;
    for (int i = 0; i < 4; ++i) header_len |= static_cast<size_t>(static_cast<uint8_t>(bytes[8 + i])) << (8 * i);
    offset = 12;
  } else {
    return invalid_input("{}: unsupported .npy version {}", what, major);
  }
  if (header_len > bytes.size() - offset) return invalid_input("{}: the .npy header runs past the end of the file", what);
  std::string header = bytes.substr(offset, header_len);
  std::string descr, err;
  bool fortran = false;
  shape_t shape;
  if (!dict_parser(header).parse(&descr, &fortran, &shape, &err)) return invalid_input("{}: bad .npy header: {}", what, err);
  dtype t;
  bool swap = false;
  if (!npy_descr(descr, &t, &swap)) return invalid_input("{}: unsupported .npy dtype '{}'", what, descr);
  int64_t n = 0;
  if (!checked_num_elements(shape, max_io_bytes / static_cast<int64_t>(dtype_size(t)), &n))
    return invalid_input("{}: .npy shape {} is too large", what, shape_str(shape));
  size_t want = static_cast<size_t>(n) * dtype_size(t);
  size_t have = bytes.size() - offset - header_len;
  if (have != want)
    return invalid_input("{}: header says shape {} {} = {} bytes but the file holds {}", what, shape_str(shape),
                         dtype_name(t), want, have);
  tensor out = tensor::zeros(t, shape);
  if (want) std::memcpy(out.raw(), bytes.data() + offset + header_len, want);
  if (swap) byteswap(out.raw(), dtype_size(t), n);
  if (fortran && shape.size() > 1) {
    // Column-major to row-major: element (i0..ik) sits at sum(i_d * prod(dims before d)).
    tensor c = tensor::zeros(t, shape);
    size_t es = dtype_size(t);
    std::vector<int64_t> idx(shape.size(), 0);
    for (int64_t i = 0; i < n; ++i) {
      int64_t f = 0, stride = 1;
      for (size_t d = 0; d < shape.size(); ++d) { f += idx[d] * stride; stride *= shape[d]; }
      std::memcpy(static_cast<char*>(c.raw()) + i * static_cast<int64_t>(es), static_cast<const char*>(out.raw()) + f * static_cast<int64_t>(es), es);
      for (size_t d = shape.size(); d-- > 0;) { if (++idx[d] < shape[d]) break; idx[d] = 0; }
    }
    out = c;
  }
  if (t == dtype::boolean) {
    for (int64_t i = 0; i < n; ++i) out.data<uint8_t>()[i] = out.data<uint8_t>()[i] != 0;
  }
  return out;
}

std::string write_npy(const tensor& t) {
  const char* code = npy_code(t.type());
  std::string shape;
  if (t.rank() == 1) shape = fmt::format("({},)", t.dim(0));
  else shape = fmt::format("({})", fmt::join(t.shape(), ", "));
  std::string dict = fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}", code ? code : "<f4", shape);
  size_t total = 10 + dict.size() + 1;
  size_t pad = (64 - total % 64) % 64;
  dict += std::string(pad, ' ') + "\n";
  std::string out("\x93NUMPY\x01\x00", 8);
  out.push_back(static_cast<char>(dict.size() & 0xff));
  out.push_back(static_cast<char>(dict.size() >> 8));
  out += dict;
  out.append(static_cast<const char*>(t.raw()), t.bytes());
  return out;
}

expected<tensor> tensor_from_proto(const onnx::TensorProto& p, const std::string& what) {
  dtype t;
  if (p.data_type() == onnx::TensorProto::STRING)
    return invalid_input("{}: tensor '{}' holds strings, which are not supported", what, p.name());
  if (!dtype_from_onnx(p.data_type(), &t))
    return invalid_input("{}: tensor '{}' has unsupported data type {}", what, p.name(), p.data_type());
  if (p.data_location() == onnx::TensorProto::EXTERNAL)
    return invalid_input("{}: tensor '{}' keeps its data in an external file", what, p.name());
  if (p.has_segment()) return invalid_input("{}: tensor '{}' is segmented, which is not supported", what, p.name());
  shape_t shape(p.dims().begin(), p.dims().end());
  int64_t n = 0;
  if (!checked_num_elements(shape, max_io_bytes / static_cast<int64_t>(dtype_size(t)), &n))
    return invalid_input("{}: tensor '{}' has a negative or too large shape {}", what, p.name(), shape_str(shape));
  size_t es = dtype_size(t);
  if (p.has_raw_data()) {
    if (p.raw_data().size() != static_cast<size_t>(n) * es)
      return invalid_input("{}: tensor '{}' of shape {} {} needs {} bytes of raw data, has {}", what, p.name(),
                           shape_str(shape), dtype_name(t), static_cast<size_t>(n) * es, p.raw_data().size());
    tensor out = tensor::zeros(t, shape);
    if (n) std::memcpy(out.raw(), p.raw_data().data(), p.raw_data().size());
    if (t == dtype::boolean) for (int64_t i = 0; i < n; ++i) out.data<uint8_t>()[i] = out.data<uint8_t>()[i] != 0;
    return out;
  }
  auto count_check = [&](int have) -> status {
    if (have != n) return invalid_input("{}: tensor '{}' has {} values for shape {} ({} elements)", what, p.name(), have, shape_str(shape), n);
    return status::ok();
  };
  tensor out = tensor::zeros(t, shape);
  switch (t) {
    case dtype::f32:
      GG_RETURN_IF_ERROR(count_check(p.float_data_size()));
      for (int64_t i = 0; i < n; ++i) out.data<float>()[i] = p.float_data(static_cast<int>(i));
      break;
    case dtype::f64:
      GG_RETURN_IF_ERROR(count_check(p.double_data_size()));
      for (int64_t i = 0; i < n; ++i) out.data<double>()[i] = p.double_data(static_cast<int>(i));
      break;
    case dtype::i64:
      GG_RETURN_IF_ERROR(count_check(p.int64_data_size()));
      for (int64_t i = 0; i < n; ++i) out.data<int64_t>()[i] = p.int64_data(static_cast<int>(i));
      break;
    case dtype::u32:
    case dtype::u64:
      GG_RETURN_IF_ERROR(count_check(p.uint64_data_size()));
      for (int64_t i = 0; i < n; ++i) {
        if (t == dtype::u32) out.data<uint32_t>()[i] = static_cast<uint32_t>(p.uint64_data(static_cast<int>(i)));
        else out.data<uint64_t>()[i] = p.uint64_data(static_cast<int>(i));
      }
      break;
    default:  // int32_data holds the 32-bit and narrower types, and the bits of f16/bf16
      GG_RETURN_IF_ERROR(count_check(p.int32_data_size()));
      dispatch_all(t, [&](auto tag) {
        using T = decltype(tag);
        for (int64_t i = 0; i < n; ++i) {
          int32_t v = p.int32_data(static_cast<int>(i));
          if constexpr (std::is_same_v<T, half> || std::is_same_v<T, bfloat16>) out.data<T>()[i].bits = static_cast<uint16_t>(v);
          else if constexpr (std::is_same_v<T, bool>) out.data<bool>()[i] = v != 0;
          else out.data<T>()[i] = static_cast<T>(v);
        }
      });
  }
  return out;
}

expected<tensor> read_tensor_proto(const std::string& bytes, const std::string& what, std::string* name_out) {
  onnx::TensorProto p;
  if (bytes.size() > static_cast<size_t>(INT32_MAX) || !p.ParseFromString(bytes))
    return invalid_input("{}: not an ONNX TensorProto (protobuf parse failed)", what);
  if (name_out) *name_out = p.name();
  return tensor_from_proto(p, what);
}

std::string write_tensor_proto(const tensor& t, const std::string& name) {
  onnx::TensorProto p;
  p.set_name(name);
  p.set_data_type(static_cast<int32_t>(t.type()));
  for (int64_t d : t.shape()) p.add_dims(d);
  p.set_raw_data(std::string(static_cast<const char*>(t.raw()), t.bytes()));
  return p.SerializeAsString();
}

expected<tensor> read_raw(const std::string& bytes, dtype type, const shape_t& shape, const std::string& what) {
  size_t es = dtype_size(type);
  if (es == 0) return invalid_input("{}: raw input of type {} is not supported", what, dtype_name(type));
  int64_t n = 0;
  if (!checked_num_elements(shape, max_io_bytes / static_cast<int64_t>(es), &n))
    return invalid_input("{}: shape {} is too large", what, shape_str(shape));
  if (bytes.size() != static_cast<size_t>(n) * es)
    return invalid_input("{}: raw input must be {} bytes ({} {}), got {}", what, static_cast<size_t>(n) * es,
                         shape_str(shape), dtype_name(type), bytes.size());
  tensor out = tensor::zeros(type, shape);
  if (n) std::memcpy(out.raw(), bytes.data(), bytes.size());
  return out;
}

expected<tensor> read_tensor_file(const std::string& path, dtype expected_type, const shape_t* static_shape,
                                  std::string* name_out) {
  std::string ext = path == "-" ? "" : extension(path);
  auto bytes = read_all(path);
  if (!bytes) return bytes.error();
  std::string what = path == "-" ? "stdin" : path;
  expected<tensor> t = tensor();
  if (ext == ".npy" || (path == "-" && bytes->size() >= 6 && bytes->compare(0, 6, "\x93NUMPY") == 0)) {
    t = read_npy(*bytes, what);
  } else if (ext == ".pb") {
    t = read_tensor_proto(*bytes, what, name_out);
  } else {
    if (!static_shape)
      return invalid_input("{}: raw bytes need the input's static shape, but the model declares none (use .npy)", what);
    if (expected_type == dtype::undefined)
      return invalid_input("{}: raw bytes need the input's dtype, but the model declares none (use .npy)", what);
    t = read_raw(*bytes, expected_type, *static_shape, what);
  }
  if (!t) return t;
  if (expected_type != dtype::undefined && t->type() != expected_type)
    return invalid_input("{}: holds {} but the model input is {}", what, dtype_name(t->type()), dtype_name(expected_type));
  return t;
}

status write_tensor_file(const std::string& path, const tensor& t, const std::string& name) {
  std::string ext = path == "-" ? "" : extension(path);
  std::string data;
  if (ext == ".npy") {
    if (!npy_code(t.type())) return invalid_input("cannot write {} as .npy", dtype_name(t.type()));
    data = write_npy(t);
  } else if (ext == ".pb") {
    data = write_tensor_proto(t, name);
  } else {
    data.assign(static_cast<const char*>(t.raw()), t.bytes());
  }
  if (path == "-") {
    size_t done = 0;
    while (done < data.size()) {
      ssize_t w = ::write(STDOUT_FILENO, data.data() + done, data.size() - done);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return io_error("cannot write to stdout: {}", std::strerror(errno));
      done += static_cast<size_t>(w);
    }
    return status::ok();
  }
  // Write beside the target, then rename: readers never see half a file.
  std::filesystem::path target(path);
  std::string tmp = (target.parent_path() / (".gpugrid-tmp-" + target.filename().string() + "-" + std::to_string(::getpid()))).string();
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return io_error("cannot write '{}': {}", path, std::strerror(errno));
  size_t done = 0;
  while (done < data.size()) {
    ssize_t w = ::write(fd, data.data() + done, data.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return io_error("cannot write '{}': {}", path, std::strerror(err));
    }
    done += static_cast<size_t>(w);
  }
  ::close(fd);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return io_error("cannot write '{}': {}", path, std::strerror(err));
  }
  return status::ok();
}

}  // namespace gpugrid
