// Reading and writing tensors: .npy (NumPy), ONNX TensorProto (.pb), raw little-endian bytes.
// These parse untrusted files: every size is checked against the bytes present before
// anything is allocated, and every message is one line naming the file.
#include "engine/tensor_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <type_traits>

#include "engine/tensor_proto.h"
#include <onnx/onnx-data_pb.h>

namespace gpugrid {

namespace {

constexpr size_t max_rank = 64;  // numpy allows 32 (64 since 2.0); ONNX sets no limit

// Text from a file, made safe for a one-line message: control bytes become '?', long text is cut.
std::string printable(const std::string& s, size_t max_len = 80) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < max_len; ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    out.push_back(c < 0x20 || c == 0x7f ? '?' : static_cast<char>(c));
  }
  if (s.size() > max_len) out += "...";
  return out;
}

// Python's spelling of a shape tuple: (), (3,), (1, 784).
std::string py_shape(const shape_t& shape) {
  if (shape.size() == 1) return fmt::format("({},)", shape[0]);
  return fmt::format("({})", fmt::join(shape, ", "));
}

// Checks dims and computes the element count: no negative dim, at most max_rank dims, and
// the product of the non-zero dims (so an empty tensor cannot carry absurd dims either)
// within max_tensor_file_bytes.
enum class shape_check { ok, negative, too_many_dims, too_large };
shape_check check_shape(const shape_t& shape, size_t elem_size, int64_t* n) {
  if (shape.size() > max_rank) return shape_check::too_many_dims;
  const int64_t max_elements = max_tensor_file_bytes / static_cast<int64_t>(elem_size);
  int64_t nonzero = 1;
  bool empty = false;
  for (int64_t d : shape) {
    if (d < 0) return shape_check::negative;
    if (d == 0) { empty = true; continue; }
    if (nonzero > max_elements / d) return shape_check::too_large;
    nonzero *= d;
  }
  *n = empty ? 0 : nonzero;
  return shape_check::ok;
}

// Bool bytes other than 0 and 1 are not valid C++ bools: normalise what came from a file.
void normalise_bools(tensor& t) {
  auto* p = static_cast<uint8_t*>(t.raw());
  for (int64_t i = 0, n = t.numel(); i < n; ++i) p[i] = p[i] != 0;
}

void byteswap(void* data, size_t esize, int64_t n) {
  auto* p = static_cast<uint8_t*>(data);
  for (int64_t i = 0; i < n; ++i, p += esize)
    for (size_t a = 0, b = esize - 1; a < b; ++a, --b) std::swap(p[a], p[b]);
}

// ---- .npy ----

// The descr string of a .npy header: byte order then type code and size ("<f4", "|b1").
status parse_descr(const std::string& what, const std::string& descr, dtype* t, bool* swap) {
  std::string code = descr;
  char order = '=';
  if (!code.empty() && std::strchr("<>|=", code[0]) != nullptr) {
    order = code[0];
    code.erase(0, 1);
  }
  struct row { const char* code; dtype type; };
  static const row rows[] = {{"f2", dtype::f16}, {"f4", dtype::f32}, {"f8", dtype::f64},
                             {"i1", dtype::i8},  {"i2", dtype::i16}, {"i4", dtype::i32},
                             {"i8", dtype::i64}, {"u1", dtype::u8},  {"u2", dtype::u16},
                             {"u4", dtype::u32}, {"u8", dtype::u64}, {"b1", dtype::boolean}};
  for (const auto& r : rows) {
    if (code == r.code) {
      *t = r.type;
      *swap = order == '>' && dtype_size(r.type) > 1;
      return status::ok();
    }
  }
  std::string shown = printable(descr);
  char kind = code.empty() ? '\0' : code[0];
  if (kind == 'O')
    return invalid_input("{}: the .npy holds Python objects (dtype '{}'), which are not supported "
                         "(they need pickle; save a numeric array)", what, shown);
  if (kind == 'U' || kind == 'S' || kind == 'a')
    return invalid_input("{}: the .npy holds strings (dtype '{}'), which are not supported", what, shown);
  if (kind == 'c')
    return invalid_input("{}: the .npy holds complex numbers (dtype '{}'), which are not supported", what, shown);
  if (kind == 'M' || kind == 'm')
    return invalid_input("{}: the .npy holds dates or times (dtype '{}'), which are not supported", what, shown);
  return invalid_input("{}: unsupported .npy dtype '{}' (supported: f2 f4 f8 i1 i2 i4 i8 u1 u2 u4 u8 b1)",
                       what, shown);
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

// The header of a .npy is the repr of a Python dict, e.g.
//   {'descr': '<f4', 'fortran_order': False, 'shape': (1, 784), }
// This parses exactly that literal grammar: string keys, a string descr, True/False and a
// tuple of non-negative integers, each key once, nothing but whitespace after the '}'.
class npy_header_parser {
 public:
  explicit npy_header_parser(const std::string& s) : s_(s) {}

  // On failure returns false with *err saying what is wrong.
  bool parse(std::string* descr, bool* fortran, shape_t* shape, std::string* err) {
    bool have_descr = false, have_fortran = false, have_shape = false;
    skip();
    if (!eat('{')) return fail(err, "the header is not a Python dict");
    for (;;) {
      skip();
      if (eat('}')) break;
      std::string key;
      if (!string_literal(&key, err)) return err->empty() ? fail(err, "a header key is not a string") : false;
      skip();
      if (!eat(':')) return fail(err, "':' missing after '" + printable(key) + "' in the header");
      skip();
      if (key == "descr") {
        if (have_descr) return fail(err, "'descr' appears twice");
        if (peek() == '[' || peek() == '{')
          return fail(err, "structured dtypes (a list in 'descr') are not supported");
        if (!string_literal(descr, err)) return err->empty() ? fail(err, "'descr' is not a string") : false;
        have_descr = true;
      } else if (key == "fortran_order") {
        if (have_fortran) return fail(err, "'fortran_order' appears twice");
        if (keyword("True")) *fortran = true;
        else if (keyword("False")) *fortran = false;
        else return fail(err, "'fortran_order' is not True or False");
        have_fortran = true;
      } else if (key == "shape") {
        if (have_shape) return fail(err, "'shape' appears twice");
        if (!tuple(shape, err)) return false;
        have_shape = true;
      } else {
        return fail(err, "unexpected key '" + printable(key) + "' (only descr, fortran_order and shape)");
      }
      skip();
      if (eat(',')) continue;
      if (eat('}')) break;
      return fail(err, "',' or '}' expected in the header");
    }
    skip();
    if (p_ != s_.size()) return fail(err, "text after the closing '}'");
    if (!have_descr) return fail(err, "the header has no 'descr'");
    if (!have_fortran) return fail(err, "the header has no 'fortran_order'");
    if (!have_shape) return fail(err, "the header has no 'shape'");
    return true;
  }

 private:
  static bool fail(std::string* err, std::string m) { *err = std::move(m); return false; }
  char peek() const { return p_ < s_.size() ? s_[p_] : '\0'; }
  void skip() {
    while (p_ < s_.size() && (s_[p_] == ' ' || s_[p_] == '\n' || s_[p_] == '\t' || s_[p_] == '\r')) ++p_;
  }
  bool eat(char c) {
    if (peek() != c || p_ >= s_.size()) return false;
    ++p_;
    return true;
  }
  static bool ident_char(char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
  }
  bool keyword(const char* w) {
    size_t n = std::strlen(w);
    if (s_.compare(p_, n, w) != 0) return false;
    if (p_ + n < s_.size() && ident_char(s_[p_ + n])) return false;  // "Trueish"
    p_ += n;
    return true;
  }
  // '...' or "..." without escapes (numpy never writes any in these fields).
  bool string_literal(std::string* out, std::string* err) {
    err->clear();
    char q = peek();
    if (q != '\'' && q != '"') return false;
    size_t start = ++p_;
    while (p_ < s_.size() && s_[p_] != q) {
      if (s_[p_] == '\\') return fail(err, "escapes in header strings are not supported");
      if (s_[p_] == '\n') return fail(err, "a header string runs past the end of the line");
      ++p_;
    }
    if (p_ >= s_.size()) return fail(err, "a header string is not closed");
    *out = s_.substr(start, p_ - start);
    ++p_;
    return true;
  }
  // A Python int: 0 or digits without a leading zero; Python 2's 'L' suffix is accepted.
  bool integer(int64_t* out) {
    if (!std::isdigit(static_cast<unsigned char>(peek()))) return false;
    if (peek() == '0' && p_ + 1 < s_.size() && std::isdigit(static_cast<unsigned char>(s_[p_ + 1])))
      return false;
    int64_t v = 0;
    while (std::isdigit(static_cast<unsigned char>(peek()))) {
      if (v > (INT64_MAX - 9) / 10) return false;
      v = v * 10 + (s_[p_++] - '0');
    }
    if (peek() == 'L') ++p_;
    if (ident_char(peek())) return false;
    *out = v;
    return true;
  }
  // (), (n,), (n, m), (n, m,): a one-element tuple needs its comma, as in Python.
  bool tuple(shape_t* out, std::string* err) {
    out->clear();
    const char* bad = "'shape' is not a tuple of non-negative integers";
    if (!eat('(')) return fail(err, bad);
    skip();
    if (eat(')')) return true;
    bool comma = false;
    for (;;) {
      int64_t v = 0;
      if (!integer(&v)) return fail(err, bad);
      if (out->size() >= max_rank) return fail(err, fmt::format("'shape' has more than {} dims", max_rank));
      out->push_back(v);
      skip();
      if (eat(',')) {
        comma = true;
        skip();
        if (eat(')')) return true;
        continue;
      }
      if (eat(')')) {
        if (out->size() == 1 && !comma) return fail(err, "'shape' (n) is not a tuple; a 1-d shape is (n,)");
        return true;
      }
      return fail(err, bad);
    }
  }

  const std::string& s_;
  size_t p_ = 0;
};

// ---- files ----

std::string errno_text(int err) { return std::strerror(err); }

expected<std::string> read_all(const std::string& path) {
  const bool is_stdin = path == "-";
  const std::string shown = is_stdin ? std::string("stdin") : "'" + path + "'";
  const size_t cap = static_cast<size_t>(max_tensor_file_bytes) + (size_t{1} << 20);
  int fd = is_stdin ? STDIN_FILENO : ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return invalid_input("cannot read {}: {}", shown, errno_text(errno));
  auto close_fd = [&] { if (!is_stdin) ::close(fd); };
  std::string data;
  struct stat st {};
  if (::fstat(fd, &st) == 0) {
    if (S_ISDIR(st.st_mode)) {
      close_fd();
      return invalid_input("cannot read {}: {}", shown, errno_text(EISDIR));
    }
    if (S_ISREG(st.st_mode)) {
      if (static_cast<uint64_t>(st.st_size) > cap) {
        close_fd();
        return invalid_input("cannot read {}: it is {} bytes, over the {} GiB limit for a tensor", shown,
                             static_cast<uint64_t>(st.st_size), max_tensor_file_bytes >> 30);
      }
      data.resize(static_cast<size_t>(st.st_size) + 1);  // one byte over: the read that sees the end
    }
  }
  size_t used = 0;
  for (;;) {
    if (used == data.size()) data.resize(used + (size_t{1} << 16));  // a pipe, or a file that grew
    ssize_t r = ::read(fd, &data[used], data.size() - used);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      int err = errno;
      close_fd();
      return invalid_input("cannot read {}: {}", shown, errno_text(err));
    }
    if (r == 0) break;
    used += static_cast<size_t>(r);
    if (used > cap) {
      close_fd();
      return invalid_input("cannot read {}: more than {} GiB, the limit for a tensor", shown,
                           max_tensor_file_bytes >> 30);
    }
  }
  close_fd();
  data.resize(used);
  return data;
}

std::string extension(const std::string& path) {
  auto e = std::filesystem::path(path).extension().string();
  for (auto& c : e) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return e;
}

status write_fd_all(int fd, const std::string& data, const std::string& shown) {
  size_t done = 0;
  while (done < data.size()) {
    size_t chunk = std::min(data.size() - done, size_t{1} << 30);
    ssize_t w = ::write(fd, data.data() + done, chunk);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return io_error("cannot write {}: {}", shown, errno_text(errno));
    if (w == 0) return io_error("cannot write {}: no progress", shown);
    done += static_cast<size_t>(w);
  }
  return status::ok();
}

}  // namespace

// ---- .npy ----

expected<tensor> read_npy(const std::string& bytes, const std::string& what) {
  if (bytes.size() < 6 || std::memcmp(bytes.data(), "\x93NUMPY", 6) != 0)
    return invalid_input("{}: not a .npy file (it does not start with \\x93NUMPY)", what);
  if (bytes.size() < 10) return invalid_input("{}: truncated .npy file ({} bytes)", what, bytes.size());
  const int major = static_cast<uint8_t>(bytes[6]), minor = static_cast<uint8_t>(bytes[7]);
  size_t header_len = 0, offset = 0;
  if (major == 1 && minor == 0) {
    header_len = static_cast<size_t>(static_cast<uint8_t>(bytes[8])) |
                 (static_cast<size_t>(static_cast<uint8_t>(bytes[9])) << 8);
    offset = 10;
  } else if ((major == 2 || major == 3) && minor == 0) {
    if (bytes.size() < 12) return invalid_input("{}: truncated .npy file ({} bytes)", what, bytes.size());
    for (int i = 0; i < 4; ++i)
      header_len |= static_cast<size_t>(static_cast<uint8_t>(bytes[8 + i])) << (8 * i);
    offset = 12;
  } else {
    return invalid_input("{}: unsupported .npy format version {}.{} (supported: 1.0, 2.0, 3.0)", what, major,
                         minor);
  }
  if (header_len > bytes.size() - offset)
    return invalid_input("{}: the .npy header claims {} bytes but the file has only {} after the preamble", what,
                         header_len, bytes.size() - offset);
  const std::string header = bytes.substr(offset, header_len);
  std::string descr, err;
  bool fortran = false;
  shape_t shape;
  if (!npy_header_parser(header).parse(&descr, &fortran, &shape, &err))
    return invalid_input("{}: bad .npy header: {}", what, err);
  dtype t = dtype::undefined;
  bool swap = false;
  GG_RETURN_IF_ERROR(parse_descr(what, descr, &t, &swap));
  const size_t es = dtype_size(t);
  int64_t n = 0;
  if (check_shape(shape, es, &n) != shape_check::ok)
    return invalid_input("{}: .npy shape {} {} is larger than the {} GiB limit for a tensor", what,
                         py_shape(shape), dtype_name(t), max_tensor_file_bytes >> 30);
  const size_t want = static_cast<size_t>(n) * es;
  const size_t have = bytes.size() - offset - header_len;
  if (have != want)
    return invalid_input("{}: header says shape {} {} = {} bytes but the file holds {}", what, py_shape(shape),
                         dtype_name(t), want, have);
  const char* src = bytes.data() + offset + header_len;
  tensor out = tensor::zeros(t, shape);
  if (fortran && shape.size() > 1 && n > 0) {
    // Column-major to row-major: walk the output in C order while tracking the Fortran offset.
    const size_t rank = shape.size();
    std::vector<int64_t> idx(rank, 0), fstride(rank, 1);
    for (size_t d = 1; d < rank; ++d) fstride[d] = fstride[d - 1] * shape[d - 1];
    char* dst = static_cast<char*>(out.raw());
    int64_t f = 0;
    for (int64_t i = 0; i < n; ++i) {
      std::memcpy(dst + static_cast<size_t>(i) * es, src + static_cast<size_t>(f) * es, es);
      for (size_t d = rank; d-- > 0;) {
        f += fstride[d];
        if (++idx[d] < shape[d]) break;
        f -= fstride[d] * shape[d];
        idx[d] = 0;
      }
    }
  } else if (want > 0) {
    std::memcpy(out.raw(), src, want);
  }
  if (swap) byteswap(out.raw(), es, n);
  if (t == dtype::boolean) normalise_bools(out);
  return out;
}

std::string write_npy(const tensor& in) {
  tensor t = in;
  if (t.type() == dtype::bf16) {  // numpy has no bfloat16; float32 holds every value exactly
    tensor f = tensor::zeros(dtype::f32, t.shape());
    for (int64_t i = 0, n = t.numel(); i < n; ++i) f.data<float>()[i] = static_cast<float>(t.data<bfloat16>()[i]);
    t = f;
  }
  const char* code = npy_code(t.type());
  std::string dict = fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}",
                                 code ? code : "|u1", py_shape(t.shape()));
  // numpy pads with spaces and a final newline so the data starts at a multiple of 64.
  bool v2 = false;
  size_t total = 10 + dict.size() + 1;
  size_t pad = (64 - total % 64) % 64;
  if (dict.size() + pad + 1 > 0xffff) {
    v2 = true;
    total = 12 + dict.size() + 1;
    pad = (64 - total % 64) % 64;
  }
  dict.append(pad, ' ');
  dict.push_back('\n');
  std::string out = v2 ? std::string("\x93NUMPY\x02\x00", 8) : std::string("\x93NUMPY\x01\x00", 8);
  const size_t len = dict.size();
  out.push_back(static_cast<char>(len & 0xff));
  out.push_back(static_cast<char>((len >> 8) & 0xff));
  if (v2) {
    out.push_back(static_cast<char>((len >> 16) & 0xff));
    out.push_back(static_cast<char>((len >> 24) & 0xff));
  }
  out += dict;
  if (code && t.numel() > 0) out.append(static_cast<const char*>(t.raw()), t.bytes());
  return out;
}

// ---- TensorProto ----

expected<tensor> tensor_from_proto(const onnx::TensorProto& p, const std::string& what) {
  const std::string who =
      p.name().empty() ? what + ": tensor" : what + ": tensor '" + printable(p.name()) + "'";
  const int32_t code = p.data_type();
  if (code == onnx::TensorProto::UNDEFINED)
    return invalid_input("{} has no data type (is this a TensorProto?)", who);
  if (code == onnx::TensorProto::STRING) return invalid_input("{} holds strings, which are not supported", who);
  dtype t = dtype::undefined;
  if (!dtype_from_onnx(code, &t) || dtype_size(t) == 0) {
    std::string type_name = onnx::TensorProto_DataType_IsValid(code)
                                ? onnx::TensorProto_DataType_Name(static_cast<onnx::TensorProto_DataType>(code))
                                : std::string("unknown");
    return invalid_input("{} has unsupported data type {} ({})", who, type_name, code);
  }
  // data_location decides (onnx.proto); leftover external_data entries beside raw_data are ignored.
  if (p.data_location() == onnx::TensorProto::EXTERNAL || (p.external_data_size() > 0 && !p.has_raw_data()))
    return invalid_input("{} keeps its data in an external file, which is read only when loading a model", who);
  if (p.has_segment()) return invalid_input("{} is segmented, which is not supported", who);
  const shape_t shape(p.dims().begin(), p.dims().end());
  const size_t es = dtype_size(t);
  int64_t n = 0;
  switch (check_shape(shape, es, &n)) {
    case shape_check::ok: break;
    case shape_check::negative:
      return invalid_input("{} has a negative dimension in its shape {}", who, shape_str(shape));
    case shape_check::too_many_dims:
      return invalid_input("{} has {} dims; more than {} are not supported", who, shape.size(), max_rank);
    case shape_check::too_large:
      return invalid_input("{} of shape {} {} is larger than the {} GiB limit for a tensor", who,
                           shape_str(shape), dtype_name(t), max_tensor_file_bytes >> 30);
  }
  const size_t want = static_cast<size_t>(n) * es;
  if (p.has_raw_data()) {
    if (p.raw_data().size() != want)
      return invalid_input("{} of shape {} {} needs {} bytes of raw_data but has {}", who, shape_str(shape),
                           dtype_name(t), want, p.raw_data().size());
    tensor out = tensor::zeros(t, shape);
    if (want > 0) std::memcpy(out.raw(), p.raw_data().data(), want);
    if (t == dtype::boolean) normalise_bools(out);
    return out;
  }
  // Typed fields, as onnx.proto assigns them.
  const char* field = "int32_data";
  int have = 0;
  switch (t) {
    case dtype::f32: field = "float_data"; have = p.float_data_size(); break;
    case dtype::f64: field = "double_data"; have = p.double_data_size(); break;
    case dtype::i64: field = "int64_data"; have = p.int64_data_size(); break;
    case dtype::u32:
    case dtype::u64: field = "uint64_data"; have = p.uint64_data_size(); break;
    default: field = "int32_data"; have = p.int32_data_size(); break;
  }
  if (have != n) {
    if (have == 0)
      return invalid_input("{} of shape {} {} has no data ({} values expected in raw_data or {})", who,
                           shape_str(shape), dtype_name(t), n, field);
    return invalid_input("{} of shape {} {} needs {} values but {} holds {}", who, shape_str(shape),
                         dtype_name(t), n, field, have);
  }
  tensor out = tensor::zeros(t, shape);
  const int count = static_cast<int>(n);
  switch (t) {
    case dtype::f32: std::copy(p.float_data().begin(), p.float_data().end(), out.data<float>()); break;
    case dtype::f64: std::copy(p.double_data().begin(), p.double_data().end(), out.data<double>()); break;
    case dtype::i64: std::copy(p.int64_data().begin(), p.int64_data().end(), out.data<int64_t>()); break;
    case dtype::u64: std::copy(p.uint64_data().begin(), p.uint64_data().end(), out.data<uint64_t>()); break;
    case dtype::u32:
      for (int i = 0; i < count; ++i) out.data<uint32_t>()[i] = static_cast<uint32_t>(p.uint64_data(i));
      break;
    default:  // int32_data: the narrow integers, bool, and the bits of float16/bfloat16
      dispatch_all(t, [&](auto tag) {
        using T = decltype(tag);
        T* dst = out.data<T>();
        for (int i = 0; i < count; ++i) {
          const int32_t v = p.int32_data(i);
          if constexpr (std::is_same_v<T, half> || std::is_same_v<T, bfloat16>) {
            dst[i].bits = static_cast<uint16_t>(v);
          } else if constexpr (std::is_same_v<T, bool>) {
            dst[i] = v != 0;
          } else if constexpr (std::is_integral_v<T>) {
            dst[i] = static_cast<T>(v);  // wraps like onnx's numpy_helper
          }
        }
      });
  }
  return out;
}

expected<tensor> read_tensor_proto(const std::string& bytes, const std::string& what, std::string* name_out) {
  if (name_out) name_out->clear();
  if (bytes.size() > static_cast<size_t>(INT_MAX))
    return invalid_input("{}: {} bytes is over protobuf's 2 GiB limit for a TensorProto", what, bytes.size());
  onnx::TensorProto p;
  if (!p.ParseFromString(bytes)) return invalid_input("{}: not an ONNX TensorProto (protobuf parse failed)", what);
  if (name_out) *name_out = p.name();
  return tensor_from_proto(p, what);
}

namespace {

constexpr size_t max_sequence_items = 1 << 20;

expected<tensor> sequence_from_proto(const onnx::SequenceProto& p, const std::string& what) {
  if (p.elem_type() != onnx::SequenceProto::TENSOR && p.elem_type() != onnx::SequenceProto::UNDEFINED)
    return invalid_input("{}: a sequence of element kind {} (not tensors) is not supported", what, p.elem_type());
  if (p.sparse_tensor_values_size() || p.sequence_values_size() || p.map_values_size() || p.optional_values_size())
    return invalid_input("{}: sequences of sparse tensors, sequences, maps or optionals are not supported", what);
  if (static_cast<size_t>(p.tensor_values_size()) > max_sequence_items)
    return invalid_input("{}: a sequence of {} tensors is over the limit of {}", what, p.tensor_values_size(),
                         max_sequence_items);
  std::vector<tensor> items;
  dtype elem = dtype::undefined;
  for (int i = 0; i < p.tensor_values_size(); ++i) {
    auto t = tensor_from_proto(p.tensor_values(i), fmt::format("{}: sequence item {}", what, i));
    if (!t) return t.error();
    if (i > 0 && t->type() != elem)
      return invalid_input("{}: sequence item {} is {} but item 0 is {}", what, i, dtype_name(t->type()),
                           dtype_name(elem));
    elem = t->type();
    items.push_back(std::move(t).value());
  }
  return tensor::sequence(elem, std::move(items));
}

}  // namespace

expected<tensor> read_sequence_proto(const std::string& bytes, const std::string& what, std::string* name_out) {
  if (name_out) name_out->clear();
  if (bytes.size() > static_cast<size_t>(INT_MAX))
    return invalid_input("{}: {} bytes is over protobuf's 2 GiB limit for a SequenceProto", what, bytes.size());
  onnx::SequenceProto p;
  if (!p.ParseFromString(bytes)) return invalid_input("{}: not an ONNX SequenceProto (protobuf parse failed)", what);
  if (name_out) *name_out = p.name();
  return sequence_from_proto(p, what);
}

expected<tensor> read_optional_proto(const std::string& bytes, const std::string& what, std::string* name_out) {
  if (name_out) name_out->clear();
  if (bytes.size() > static_cast<size_t>(INT_MAX))
    return invalid_input("{}: {} bytes is over protobuf's 2 GiB limit for an OptionalProto", what, bytes.size());
  onnx::OptionalProto p;
  if (!p.ParseFromString(bytes)) return invalid_input("{}: not an ONNX OptionalProto (protobuf parse failed)", what);
  if (name_out) *name_out = p.name();
  switch (p.elem_type()) {
    case onnx::OptionalProto::UNDEFINED: return tensor::none();
    case onnx::OptionalProto::TENSOR:
      if (!p.has_tensor_value()) return tensor::none();
      return tensor_from_proto(p.tensor_value(), what);
    case onnx::OptionalProto::SEQUENCE:
      if (!p.has_sequence_value()) return tensor::none();
      return sequence_from_proto(p.sequence_value(), what);
    default:
      return invalid_input("{}: an optional of element kind {} (not a tensor or sequence) is not supported", what,
                           p.elem_type());
  }
}

std::string write_tensor_proto(const tensor& t, const std::string& name) {
  onnx::TensorProto p;
  p.set_name(name);
  p.set_data_type(static_cast<int32_t>(t.type()));
  for (int64_t d : t.shape()) p.add_dims(d);
  if (t.numel() > 0 && t.raw()) p.set_raw_data(static_cast<const char*>(t.raw()), t.bytes());
  else p.set_raw_data(std::string());
  return p.SerializeAsString();
}

// ---- raw ----

expected<tensor> read_raw(const std::string& bytes, dtype type, const shape_t& shape, const std::string& what) {
  const size_t es = dtype_size(type);
  if (es == 0) return invalid_input("{}: raw data of type {} is not supported", what, dtype_name(type));
  int64_t n = 0;
  switch (check_shape(shape, es, &n)) {
    case shape_check::ok: break;
    case shape_check::negative:
      return invalid_input("{}: raw data needs a static shape, but {} has symbolic dims (give a .npy file)", what,
                           shape_str(shape));
    default:
      return invalid_input("{}: shape {} {} is larger than the {} GiB limit for a tensor", what, shape_str(shape),
                           dtype_name(type), max_tensor_file_bytes >> 30);
  }
  const size_t want = static_cast<size_t>(n) * es;
  if (bytes.size() != want)
    return invalid_input("{}: raw data for shape {} {} must be {} bytes, got {}", what, shape_str(shape),
                         dtype_name(type), want, bytes.size());
  tensor out = tensor::zeros(type, shape);
  if (want > 0) std::memcpy(out.raw(), bytes.data(), want);
  if (type == dtype::boolean) normalise_bools(out);
  return out;
}

// ---- files ----

expected<tensor> read_tensor_file(const std::string& path, dtype expected_type, const shape_t* static_shape,
                                  std::string* name_out) {
  if (name_out) name_out->clear();
  const bool is_stdin = path == "-";
  const std::string ext = is_stdin ? "" : extension(path);
  const std::string what = is_stdin ? "stdin" : path;
  GG_ASSIGN_OR_RETURN(std::string bytes, read_all(path));
  expected<tensor> t = tensor();
  const bool npy_magic = bytes.size() >= 6 && bytes.compare(0, 6, "\x93NUMPY") == 0;
  if (ext == ".npy" || (ext != ".pb" && npy_magic)) {  // a .npy under any name, or from a pipe
    t = read_npy(bytes, what);
  } else if (ext == ".pb") {
    t = read_tensor_proto(bytes, what, name_out);
  } else {
    if (expected_type == dtype::undefined)
      return invalid_input("{}: raw bytes need the input's dtype, but the model declares none (give a .npy or .pb file)",
                           what);
    if (!static_shape)
      return invalid_input("{}: raw bytes need the input's static shape, but the model declares none (give a .npy or .pb file)",
                           what);
    t = read_raw(bytes, expected_type, *static_shape, what);
  }
  if (!t) return t;
  if (expected_type != dtype::undefined && t->type() != expected_type)
    return invalid_input("{}: holds {} but the model input is {}", what, dtype_name(t->type()),
                         dtype_name(expected_type));
  return t;
}

status write_tensor_file(const std::string& path, const tensor& t, const std::string& name, bool fresh) {
  const bool is_stdout = path == "-";
  const std::string shown = is_stdout ? std::string("stdout") : "'" + path + "'";
  if (!t.defined() || dtype_size(t.type()) == 0)
    return invalid_input("cannot write {}: tensor '{}' has type {}, which is not supported", shown, name,
                         dtype_name(t.type()));
  if (t.device() != device_kind::cpu)
    return internal_error("cannot write {}: tensor '{}' is not in CPU memory", shown, name);
  const std::string ext = is_stdout ? "" : extension(path);
  std::string data;
  if (ext == ".npy") data = write_npy(t);
  else if (ext == ".pb") data = write_tensor_proto(t, name);
  else if (t.numel() > 0) data.assign(static_cast<const char*>(t.raw()), t.bytes());

  if (is_stdout) {
    std::cout.flush();
    std::fflush(stdout);
    return write_fd_all(STDOUT_FILENO, data, shown);
  }

  if (fresh) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0) return io_error("cannot write {}: {}", shown, errno_text(errno));
    status s = write_fd_all(fd, data, shown);
    if (::close(fd) != 0 && s.is_ok()) s = io_error("cannot write {}: {}", shown, errno_text(errno));
    if (!s.is_ok()) ::unlink(path.c_str());
    return s;
  }

  // Something that is not a regular file (/dev/null, /dev/stdout, a named pipe) is written in
  // place; renaming over it would replace the device node.
  std::filesystem::path target(path);
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return io_error("cannot write {}: {}", shown, errno_text(EISDIR));
    if (!S_ISREG(st.st_mode)) {
      int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
      if (fd < 0) return io_error("cannot write {}: {}", shown, errno_text(errno));
      status s = write_fd_all(fd, data, shown);
      ::close(fd);
      return s;
    }
    // A symlink to a file: replace the file it points to, not the link.
    std::error_code ec;
    auto real = std::filesystem::canonical(target, ec);
    if (!ec) target = real;
  }

  // Write beside the target, then rename: readers never see half a file.
  static std::atomic<unsigned> counter{0};
  const std::filesystem::path dir = target.parent_path();
  std::string tmp;
  int fd = -1;
  for (int attempt = 0; attempt < 100 && fd < 0; ++attempt) {
    tmp = (dir / fmt::format(".{}.tmp-{}-{}", target.filename().string(), ::getpid(), counter++)).string();
    fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && errno != EEXIST) break;
  }
  if (fd < 0) return io_error("cannot write {}: {}", shown, errno_text(errno));
  status s = write_fd_all(fd, data, shown);
  if (::close(fd) != 0 && s.is_ok()) s = io_error("cannot write {}: {}", shown, errno_text(errno));
  if (s.is_ok() && std::rename(tmp.c_str(), target.c_str()) != 0)
    s = io_error("cannot write {}: {}", shown, errno_text(errno));
  if (!s.is_ok()) ::unlink(tmp.c_str());
  return s;
}

}  // namespace gpugrid
