#include <catch2/catch.hpp>

#include <onnx/onnx_pb.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "engine/tensor_io.h"
#include "engine/tensor_proto.h"

using namespace gpugrid;

namespace {

// A .npy file as numpy writes it: magic, version, header length, the dict padded with spaces
// and a newline so that the data starts at a multiple of 64, then the data.
std::string npy_file(const std::string& dict, const std::string& data, int major = 1) {
  const size_t pre = major == 1 ? 10 : 12;
  std::string header = dict;
  size_t total = pre + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  std::string out("\x93NUMPY", 6);
  out.push_back(static_cast<char>(major));
  out.push_back('\0');
  const size_t len = header.size();
  out.push_back(static_cast<char>(len & 0xff));
  out.push_back(static_cast<char>(len >> 8));
  if (major != 1) {
    out.push_back('\0');
    out.push_back('\0');
  }
  return out + header + data;
}

std::string hex_bytes(const char* hex) {
  std::string out;
  for (size_t i = 0; hex[i] && hex[i + 1]; i += 2) out.push_back(static_cast<char>(std::stoi(std::string(hex + i, 2), nullptr, 16)));
  return out;
}

std::string tensor_bytes(const tensor& t) {
  return std::string(static_cast<const char*>(t.raw()), t.bytes());
}

// A tensor of the given type with varied bit patterns (valid bools only).
tensor patterned(dtype type, const shape_t& shape) {
  tensor t = tensor::zeros(type, shape);
  auto* p = static_cast<uint8_t*>(t.raw());
  for (size_t i = 0; i < t.bytes(); ++i) p[i] = type == dtype::boolean ? (i % 3 == 0) : static_cast<uint8_t>(i * 37 + 11);
  return t;
}

const dtype all_types[] = {dtype::f16, dtype::bf16, dtype::f32, dtype::f64, dtype::i8,  dtype::i16, dtype::i32,
                           dtype::i64, dtype::u8,   dtype::u16, dtype::u32, dtype::u64, dtype::boolean};
const shape_t some_shapes[] = {{}, {0}, {1}, {5}, {2, 3}, {2, 0, 4}, {1, 2, 3, 2}};

std::string error_of(const expected<tensor>& t) {
  REQUIRE_FALSE(t.has_value());
  return t.error().message();
}

struct temp_dir {
  std::string path;
  temp_dir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "gg-tensor-io-XXXXXX").string();
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    path = pattern;
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return path + "/" + name; }
  size_t count() const {
    size_t n = 0;
    for (auto& e : std::filesystem::directory_iterator(path)) { (void)e; ++n; }
    return n;
  }
};

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace

// ---------------------------------------------------------------- .npy

TEST_CASE("npy round trip for every dtype and shape", "[tensor_io]") {
  for (dtype type : all_types) {
    for (const shape_t& shape : some_shapes) {
      INFO(dtype_name(type) << " " << shape_str(shape));
      tensor t = patterned(type, shape);
      std::string file = write_npy(t);
      REQUIRE(file.size() >= 64);
      auto data_start = file.size() - (type == dtype::bf16 ? t.numel() * 4 : t.bytes());
      CHECK(data_start % 64 == 0);
      auto back = read_npy(file, "t.npy");
      REQUIRE(back.has_value());
      CHECK(back->shape() == shape);
      if (type == dtype::bf16) {  // numpy has no bfloat16: written as float32, exactly
        REQUIRE(back->type() == dtype::f32);
        for (int64_t i = 0; i < t.numel(); ++i)
          CHECK(back->data<float>()[i] == static_cast<float>(t.data<bfloat16>()[i]));
      } else {
        CHECK(back->type() == type);
        CHECK(tensor_bytes(*back) == tensor_bytes(t));
      }
    }
  }
}

TEST_CASE("npy writer produces numpy's exact bytes", "[tensor_io]") {
  // np.save(f, np.arange(6, dtype='<i4').reshape(2, 3))
  tensor t = tensor::from_vector<int32_t>({2, 3}, {0, 1, 2, 3, 4, 5});
  std::string expect = npy_file("{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }",
                                hex_bytes("000000000100000002000000030000000400000005000000"));
  CHECK(write_npy(t) == expect);
  CHECK(expect.size() == 128 + 24);
  // 1-d shapes get Python's trailing comma, 0-d an empty tuple.
  CHECK(write_npy(tensor::from_vector<float>({3}, {1, 2, 3})).find("'shape': (3,), }") != std::string::npos);
  CHECK(write_npy(tensor::scalar<double>(2.5)).find("'descr': '<f8', 'fortran_order': False, 'shape': (), }") !=
        std::string::npos);
  CHECK(write_npy(tensor::from_vector<uint8_t>({1}, {7})).find("'|u1'") != std::string::npos);
  CHECK(write_npy(tensor::from_vector<bool>({1}, {true})).find("'|b1'") != std::string::npos);
}

TEST_CASE("npy reads files written by numpy", "[tensor_io]") {
  SECTION("big-endian int32, shape (2, 3)") {
    auto t = read_npy(npy_file("{'descr': '>i4', 'fortran_order': False, 'shape': (2, 3), }",
                               hex_bytes("000000000000000100000002000000030000000400000005")),
                      "be.npy");
    REQUIRE(t.has_value());
    CHECK(t->type() == dtype::i32);
    CHECK(t->shape() == shape_t{2, 3});
    CHECK(t->to_int64_vector() == std::vector<int64_t>{0, 1, 2, 3, 4, 5});
  }
  SECTION("big-endian float16") {
    auto t = read_npy(npy_file("{'descr': '>f2', 'fortran_order': False, 'shape': (2,), }", hex_bytes("3e00c000")),
                      "h.npy");
    REQUIRE(t.has_value());
    CHECK(t->type() == dtype::f16);
    CHECK(t->as_double(0) == 1.5);
    CHECK(t->as_double(1) == -2.0);
  }
  SECTION("big-endian float64 and uint64") {
    auto d = read_npy(npy_file("{'descr': '>f8', 'fortran_order': False, 'shape': (1,), }", hex_bytes("4004000000000000")),
                      "d.npy");
    REQUIRE(d.has_value());
    CHECK(d->as_double(0) == 2.5);
    auto u = read_npy(npy_file("{'descr': '>u8', 'fortran_order': False, 'shape': (1,), }", hex_bytes("0102030405060708")),
                      "u.npy");
    REQUIRE(u.has_value());
    CHECK(u->data<uint64_t>()[0] == 0x0102030405060708ull);
  }
  SECTION("fortran order float32, shape (2, 3)") {
    // np.save(f, np.asfortranarray(np.arange(6, dtype='<f4').reshape(2, 3)))
    auto t = read_npy(npy_file("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }",
                               hex_bytes("00000000000040400000803f00008040000000400000a040")),
                      "f.npy");
    REQUIRE(t.has_value());
    CHECK(t->shape() == shape_t{2, 3});
    for (int i = 0; i < 6; ++i) CHECK(t->data<float>()[i] == static_cast<float>(i));
  }
  SECTION("fortran order, big-endian, rank 3") {
    // Element (i, j, k) of shape (2, 3, 4) holds 100i + 10j + k; Fortran order stores i fastest.
    std::string data;
    for (int k = 0; k < 4; ++k)
      for (int j = 0; j < 3; ++j)
        for (int i = 0; i < 2; ++i) {
          int16_t v = static_cast<int16_t>(100 * i + 10 * j + k);
          data.push_back(static_cast<char>(v >> 8));
          data.push_back(static_cast<char>(v & 0xff));
        }
    auto t = read_npy(npy_file("{'descr': '>i2', 'fortran_order': True, 'shape': (2, 3, 4), }", data), "f3.npy");
    REQUIRE(t.has_value());
    REQUIRE(t->shape() == shape_t{2, 3, 4});
    int64_t n = 0;
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 3; ++j)
        for (int k = 0; k < 4; ++k) CHECK(t->as_int64(n++) == 100 * i + 10 * j + k);
  }
  SECTION("fortran order with 1-d, 0-d and empty shapes is plain") {
    auto a = read_npy(npy_file("{'descr': '<i4', 'fortran_order': True, 'shape': (2,), }", hex_bytes("0100000002000000")),
                      "a.npy");
    REQUIRE(a.has_value());
    CHECK(a->to_int64_vector() == std::vector<int64_t>{1, 2});
    auto e = read_npy(npy_file("{'descr': '<i4', 'fortran_order': True, 'shape': (3, 0), }", ""), "e.npy");
    REQUIRE(e.has_value());
    CHECK(e->shape() == shape_t{3, 0});
  }
  SECTION("0-d scalar") {
    auto t = read_npy(npy_file("{'descr': '<f8', 'fortran_order': False, 'shape': (), }", hex_bytes("0000000000000440")),
                      "s.npy");
    REQUIRE(t.has_value());
    CHECK(t->rank() == 0);
    CHECK(t->numel() == 1);
    CHECK(t->as_double(0) == 2.5);
  }
  SECTION("bool, with non-0/1 bytes normalised") {
    auto t = read_npy(npy_file("{'descr': '|b1', 'fortran_order': False, 'shape': (3,), }", hex_bytes("01007f")),
                      "b.npy");
    REQUIRE(t->type() == dtype::boolean);
    const auto* p = static_cast<const uint8_t*>(t->raw());
    CHECK((p[0] == 1 && p[1] == 0 && p[2] == 1));
  }
  SECTION("empty (0, 3) int16") {
    auto t = read_npy(npy_file("{'descr': '<i2', 'fortran_order': False, 'shape': (0, 3), }", ""), "z.npy");
    REQUIRE(t.has_value());
    CHECK(t->shape() == shape_t{0, 3});
    CHECK(t->numel() == 0);
  }
  SECTION("format versions 2.0 and 3.0") {
    for (int major : {2, 3}) {
      auto t = read_npy(npy_file("{'descr': '<u2', 'fortran_order': False, 'shape': (3,), }", hex_bytes("000001000200"), major),
                        "v.npy");
      REQUIRE(t.has_value());
      CHECK(t->type() == dtype::u16);
      CHECK(t->to_int64_vector() == std::vector<int64_t>{0, 1, 2});
    }
  }
  SECTION("header spellings numpy and python 2 produced") {
    const char* dicts[] = {
        "{'descr': '<i8', 'fortran_order': False, 'shape': (2L,), }",  // Python 2 longs
        "{\"descr\": \"<i8\", \"fortran_order\": False, \"shape\": (2,)}",
        "{'shape': (2,), 'fortran_order': False, 'descr': '<i8'}",  // any key order
        "{ 'descr' : '<i8' ,\n 'fortran_order' : False , 'shape' : ( 2 , ) , }",
        "{'descr': '=i8', 'fortran_order': False, 'shape': (2,), }",
        "{'descr': 'i8', 'fortran_order': False, 'shape': (2,), }",
    };
    for (const char* d : dicts) {
      INFO(d);
      auto t = read_npy(npy_file(d, hex_bytes("0700000000000000f9ffffffffffffff")), "p.npy");
      REQUIRE(t.has_value());
      CHECK(t->to_int64_vector() == std::vector<int64_t>{7, -7});
    }
    auto t = read_npy(npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2,), }", std::string(8, '\0')), "p.npy");
    REQUIRE(t.has_value());
    CHECK(t->shape() == shape_t{1, 2});
  }
}

TEST_CASE("npy errors name the file and the problem", "[tensor_io]") {
  const std::string good_dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 784), }";
  SECTION("a header that lies about the size") {
    CHECK(error_of(read_npy(npy_file(good_dict, std::string(100, '\0')), "input.npy")) ==
          "input.npy: header says shape (1, 784) float32 = 3136 bytes but the file holds 100");
    CHECK(error_of(read_npy(npy_file(good_dict, std::string(3137, '\0')), "input.npy")) ==
          "input.npy: header says shape (1, 784) float32 = 3136 bytes but the file holds 3137");
    CHECK(error_of(read_npy(npy_file("{'descr': '<f8', 'fortran_order': False, 'shape': (), }", ""), "s.npy")) ==
          "s.npy: header says shape () float64 = 8 bytes but the file holds 0");
  }
  SECTION("absurd shapes") {
    const char* dicts[] = {
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, 1099511627776), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 4611686018427387904, 4611686018427387904), }",
        "{'descr': '<u1', 'fortran_order': False, 'shape': (17179869185,), }",
    };
    for (const char* d : dicts) {
      INFO(d);
      CHECK_THAT(error_of(read_npy(npy_file(d, ""), "big.npy")), Catch::Contains("larger than the 16 GiB limit"));
    }
    CHECK_THAT(error_of(read_npy(npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }", ""),
                                 "big.npy")),
               Catch::Contains("'shape' is not a tuple of non-negative integers"));
    std::string many = "{'descr': '<f4', 'fortran_order': False, 'shape': (";
    for (int i = 0; i < 65; ++i) many += "1, ";
    many += "), }";
    CHECK_THAT(error_of(read_npy(npy_file(many, std::string(4, '\0')), "big.npy")), Catch::Contains("more than 64 dims"));
  }
  SECTION("unsupported dtypes say what they are") {
    CHECK_THAT(error_of(read_npy(npy_file("{'descr': '|O', 'fortran_order': False, 'shape': (2,), }", std::string(16, '\0')),
                                 "o.npy")),
               Catch::StartsWith("o.npy: the .npy holds Python objects (dtype '|O')"));
    CHECK_THAT(error_of(read_npy(npy_file("{'descr': '<U2', 'fortran_order': False, 'shape': (1,), }", std::string(8, '\0')),
                                 "u.npy")),
               Catch::Contains("holds strings"));
    CHECK_THAT(error_of(read_npy(npy_file("{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }", std::string(8, '\0')),
                                 "c.npy")),
               Catch::Contains("complex"));
    CHECK_THAT(error_of(read_npy(npy_file("{'descr': '<M8[s]', 'fortran_order': False, 'shape': (1,), }", std::string(8, '\0')),
                                 "m.npy")),
               Catch::Contains("dates or times"));
    CHECK_THAT(error_of(read_npy(npy_file("{'descr': '<f16', 'fortran_order': False, 'shape': (1,), }", std::string(16, '\0')),
                                 "q.npy")),
               Catch::Contains("unsupported .npy dtype '<f16'"));
    CHECK_THAT(error_of(read_npy(npy_file("{'descr': [('a', '<i4')], 'fortran_order': False, 'shape': (2,), }",
                                          std::string(8, '\0')),
                                 "r.npy")),
               Catch::Contains("structured dtypes"));
  }
  SECTION("malformed headers") {
    struct bad { const char* dict; const char* message; };
    const bad cases[] = {
        {"", "not a Python dict"},
        {"['descr', '<f4']", "not a Python dict"},
        {"{'descr': '<f4', 'fortran_order': False}", "no 'shape'"},
        {"{'descr': '<f4', 'shape': (1,)}", "no 'fortran_order'"},
        {"{'fortran_order': False, 'shape': (1,)}", "no 'descr'"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'extra': 1}", "unexpected key 'extra'"},
        {"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,)}", "'descr' appears twice"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'shape': (1,)}", "'shape' appears twice"},
        {"{'descr': '<f4', 'fortran_order': 0, 'shape': (1,)}", "not True or False"},
        {"{'descr': '<f4', 'fortran_order': Trueish, 'shape': (1,)}", "not True or False"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1)}", "a 1-d shape is (n,)"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': [1]}", "not a tuple"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}", "not a tuple"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1.5,)}", "not a tuple"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (01,)}", "not a tuple"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1 2)}", "not a tuple"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (,)}", "not a tuple"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,,)}", "not a tuple"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,)", "',' or '}' expected"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} x", "text after the closing"},
        {"{'descr': '<f4' 'fortran_order': False, 'shape': (1,)}", "',' or '}' expected"},
        {"{'descr' '<f4', 'fortran_order': False, 'shape': (1,)}", "':' missing"},
        {"{descr: '<f4', 'fortran_order': False, 'shape': (1,)}", "key is not a string"},
        {"{'descr: '<f4', 'fortran_order': False, 'shape': (1,)}", "':' missing"},
        {"{'descr': '<f4\\x', 'fortran_order': False, 'shape': (1,)}", "escapes"},
        {"{'descr': 4, 'fortran_order': False, 'shape': (1,)}", "'descr' is not a string"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,),,}", "key is not a string"},
        {"{'descr", "a header string runs past"},
    };
    for (const auto& c : cases) {
      INFO(c.dict);
      std::string msg = error_of(read_npy(npy_file(c.dict, std::string(4, '\0')), "h.npy"));
      CHECK_THAT(msg, Catch::StartsWith("h.npy: bad .npy header: "));
      CHECK_THAT(msg, Catch::Contains(c.message));
    }
    // Control characters from the file never reach the (one-line) message.
    std::string msg = error_of(read_npy(npy_file("{'de\nscr': '<f4'}", ""), "h.npy"));
    CHECK(msg.find('\n') == std::string::npos);
  }
  SECTION("preamble problems") {
    CHECK_THAT(error_of(read_npy("", "e.npy")), Catch::StartsWith("e.npy: not a .npy file"));
    CHECK_THAT(error_of(read_npy("PK\x03\x04 a zip file", "z.npy")), Catch::StartsWith("z.npy: not a .npy file"));
    CHECK_THAT(error_of(read_npy(std::string("\x93NUMPY\x01\x00", 8), "t.npy")), Catch::Contains("truncated"));
    CHECK_THAT(error_of(read_npy(std::string("\x93NUMPY\x02\x00\x00\x00", 10), "t.npy")), Catch::Contains("truncated"));
    std::string v4 = npy_file(good_dict, std::string(3136, '\0'));
    v4[6] = 4;
    CHECK_THAT(error_of(read_npy(v4, "v.npy")), Catch::Contains("unsupported .npy format version 4.0"));
    std::string v11 = npy_file(good_dict, std::string(3136, '\0'));
    v11[7] = 1;
    CHECK_THAT(error_of(read_npy(v11, "v.npy")), Catch::Contains("version 1.1"));
    std::string past("\x93NUMPY\x02\x00\xff\xff\xff\xff{}", 14);
    CHECK_THAT(error_of(read_npy(past, "p.npy")), Catch::Contains("header claims 4294967295 bytes"));
  }
  SECTION("every truncation of a valid file is an error") {
    std::string file = write_npy(patterned(dtype::f32, {2, 3}));
    for (size_t len = 0; len < file.size(); ++len) {
      INFO(len);
      CHECK_FALSE(read_npy(file.substr(0, len), "t.npy").has_value());
    }
    CHECK(read_npy(file, "t.npy").has_value());
  }
}

TEST_CASE("npy reader survives garbage and mutations", "[tensor_io]") {
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int> byte(0, 255);
  for (int i = 0; i < 2000; ++i) {
    std::string junk(static_cast<size_t>(byte(rng)), '\0');
    for (auto& c : junk) c = static_cast<char>(byte(rng));
    if (i % 2) junk = std::string("\x93NUMPY\x01\x00", 8) + junk;
    (void)read_npy(junk, "junk.npy");
  }
  const std::string seeds[] = {write_npy(patterned(dtype::f32, {2, 3})), write_npy(patterned(dtype::boolean, {})),
                               npy_file("{'descr': '>i2', 'fortran_order': True, 'shape': (2, 3, 1), }", std::string(12, 'x'))};
  int ok = 0;
  for (const auto& seed : seeds) {
    for (int i = 0; i < 3000; ++i) {
      std::string m = seed;
      int edits = 1 + i % 4;
      for (int e = 0; e < edits; ++e) {
        size_t at = static_cast<size_t>(rng()) % m.size();
        switch (rng() % 3) {
          case 0: m[at] = static_cast<char>(byte(rng)); break;
          case 1: m.erase(at, 1); break;
          default: m.insert(at, 1, "0123456789(),: '\"TF<>|"[rng() % 22]); break;
        }
      }
      auto t = read_npy(m, "m.npy");
      if (t) {
        ++ok;
        CHECK(t->bytes() <= m.size());
      }
    }
  }
  CHECK(ok > 0);  // some mutations (data bytes) still read
}

// ---------------------------------------------------------------- TensorProto

TEST_CASE("TensorProto round trip for every dtype and shape", "[tensor_io]") {
  for (dtype type : all_types) {
    for (const shape_t& shape : some_shapes) {
      INFO(dtype_name(type) << " " << shape_str(shape));
      tensor t = patterned(type, shape);
      std::string name;
      auto back = read_tensor_proto(write_tensor_proto(t, "x_in"), "t.pb", &name);
      REQUIRE(back.has_value());
      CHECK(name == "x_in");
      CHECK(back->type() == type);
      CHECK(back->shape() == shape);
      CHECK(tensor_bytes(*back) == tensor_bytes(t));
    }
  }
}

TEST_CASE("TensorProto typed fields", "[tensor_io]") {
  onnx::TensorProto p;
  p.set_name("v");
  p.add_dims(3);
  SECTION("float_data") {
    p.set_data_type(onnx::TensorProto::FLOAT);
    for (float f : {1.5f, -2.0f, 0.25f}) p.add_float_data(f);
    auto t = tensor_from_proto(p, "m");
    REQUIRE(t.has_value());
    CHECK(t->type() == dtype::f32);
    CHECK(t->data<float>()[1] == -2.0f);
  }
  SECTION("double_data") {
    p.set_data_type(onnx::TensorProto::DOUBLE);
    for (double f : {1.5, -2.0, 1e300}) p.add_double_data(f);
    auto t = tensor_from_proto(p, "m");
    REQUIRE(t.has_value());
    CHECK(t->data<double>()[2] == 1e300);
  }
  SECTION("int64_data") {
    p.set_data_type(onnx::TensorProto::INT64);
    for (int64_t v : {int64_t{-1}, INT64_MAX, int64_t{7}}) p.add_int64_data(v);
    auto t = tensor_from_proto(p, "m");
    REQUIRE(t.has_value());
    CHECK(t->to_int64_vector() == std::vector<int64_t>{-1, INT64_MAX, 7});
  }
  SECTION("uint64_data holds uint32 and uint64") {
    p.set_data_type(onnx::TensorProto::UINT64);
    for (uint64_t v : {uint64_t{0}, UINT64_MAX, uint64_t{5}}) p.add_uint64_data(v);
    auto t = tensor_from_proto(p, "m");
    REQUIRE(t.has_value());
    CHECK(t->data<uint64_t>()[1] == UINT64_MAX);
    p.set_data_type(onnx::TensorProto::UINT32);
    p.set_uint64_data(1, 4000000000u);
    auto u = tensor_from_proto(p, "m");
    REQUIRE(u.has_value());
    CHECK(u->type() == dtype::u32);
    CHECK(u->data<uint32_t>()[1] == 4000000000u);
  }
  SECTION("int32_data holds the narrow types") {
    for (int v : {-3, 200, 1}) p.add_int32_data(v);
    p.set_data_type(onnx::TensorProto::INT8);
    CHECK(tensor_from_proto(p, "m")->to_int64_vector() == std::vector<int64_t>{-3, -56, 1});
    p.set_data_type(onnx::TensorProto::UINT8);
    CHECK(tensor_from_proto(p, "m")->to_int64_vector() == std::vector<int64_t>{253, 200, 1});
    p.set_data_type(onnx::TensorProto::INT16);
    CHECK(tensor_from_proto(p, "m")->to_int64_vector() == std::vector<int64_t>{-3, 200, 1});
    p.set_data_type(onnx::TensorProto::UINT16);
    CHECK(tensor_from_proto(p, "m")->to_int64_vector() == std::vector<int64_t>{65533, 200, 1});
    p.set_data_type(onnx::TensorProto::INT32);
    CHECK(tensor_from_proto(p, "m")->to_int64_vector() == std::vector<int64_t>{-3, 200, 1});
    p.set_data_type(onnx::TensorProto::BOOL);
    auto b = tensor_from_proto(p, "m");
    REQUIRE(b.has_value());
    const auto* bytes = static_cast<const uint8_t*>(b->raw());
    CHECK((bytes[0] == 1 && bytes[1] == 1 && bytes[2] == 1));
  }
  SECTION("int32_data holds the bits of float16 and bfloat16") {
    p.set_data_type(onnx::TensorProto::FLOAT16);
    for (int v : {0x3e00, 0xc000, 0x0000}) p.add_int32_data(v);
    auto h = tensor_from_proto(p, "m");
    REQUIRE(h.has_value());
    CHECK(h->as_double(0) == 1.5);
    CHECK(h->as_double(1) == -2.0);
    p.set_data_type(onnx::TensorProto::BFLOAT16);
    p.set_int32_data(0, 0x3fc0);
    auto bf = tensor_from_proto(p, "m");
    REQUIRE(bf.has_value());
    CHECK(bf->type() == dtype::bf16);
    CHECK(bf->as_double(0) == 1.5);
  }
  SECTION("0-d and empty") {
    onnx::TensorProto s;
    s.set_data_type(onnx::TensorProto::FLOAT);
    s.add_float_data(4.0f);
    auto t = tensor_from_proto(s, "m");
    REQUIRE(t.has_value());
    CHECK(t->rank() == 0);
    CHECK(t->as_double(0) == 4.0);
    onnx::TensorProto e;
    e.set_data_type(onnx::TensorProto::INT64);
    e.add_dims(0);
    e.add_dims(5);
    auto z = tensor_from_proto(e, "m");
    REQUIRE(z.has_value());
    CHECK(z->shape() == shape_t{0, 5});
  }
}

TEST_CASE("TensorProto errors", "[tensor_io]") {
  onnx::TensorProto p;
  p.set_name("w");
  p.set_data_type(onnx::TensorProto::FLOAT);
  p.add_dims(2);
  p.add_dims(2);
  SECTION("value counts") {
    p.add_float_data(1);
    CHECK(error_of(tensor_from_proto(p, "m.onnx")) ==
          "m.onnx: tensor 'w' of shape [2, 2] float32 needs 4 values but float_data holds 1");
    p.clear_float_data();
    CHECK(error_of(tensor_from_proto(p, "m.onnx")) ==
          "m.onnx: tensor 'w' of shape [2, 2] float32 has no data (4 values expected in raw_data or float_data)");
    p.add_int32_data(1);  // the wrong field does not count
    CHECK_FALSE(tensor_from_proto(p, "m.onnx").has_value());
    p.set_raw_data(std::string(15, '\0'));
    CHECK(error_of(tensor_from_proto(p, "m.onnx")) ==
          "m.onnx: tensor 'w' of shape [2, 2] float32 needs 16 bytes of raw_data but has 15");
    p.set_raw_data(std::string(16, '\0'));
    CHECK(tensor_from_proto(p, "m.onnx").has_value());
  }
  SECTION("shapes") {
    p.set_dims(0, -1);
    CHECK_THAT(error_of(tensor_from_proto(p, "m")), Catch::Contains("negative dimension"));
    p.set_dims(0, int64_t{1} << 40);
    p.set_dims(1, int64_t{1} << 40);
    CHECK_THAT(error_of(tensor_from_proto(p, "m")), Catch::Contains("larger than the 16 GiB limit"));
    p.set_dims(0, int64_t{1} << 33);  // 32 GiB of float, no data: refused before allocating
    p.set_dims(1, 1);
    CHECK_THAT(error_of(tensor_from_proto(p, "m")), Catch::Contains("larger than the 16 GiB limit"));
    p.set_dims(0, int64_t{1} << 30);  // 4 GiB: within the cap, but the data is missing
    CHECK_THAT(error_of(tensor_from_proto(p, "m")), Catch::Contains("has no data"));
    p.set_dims(0, 0);
    p.set_dims(1, INT64_MAX);
    p.add_dims(INT64_MAX);
    CHECK_THAT(error_of(tensor_from_proto(p, "m")), Catch::Contains("larger than"));
  }
  SECTION("data types and locations") {
    p.set_data_type(onnx::TensorProto::STRING);
    CHECK(error_of(tensor_from_proto(p, "m")) == "m: tensor 'w' holds strings, which are not supported");
    p.set_data_type(onnx::TensorProto::COMPLEX64);
    CHECK(error_of(tensor_from_proto(p, "m")) == "m: tensor 'w' has unsupported data type COMPLEX64 (14)");
    p.set_data_type(999);
    CHECK(error_of(tensor_from_proto(p, "m")) == "m: tensor 'w' has unsupported data type unknown (999)");
    p.set_data_type(onnx::TensorProto::UNDEFINED);
    CHECK_THAT(error_of(tensor_from_proto(p, "m")), Catch::Contains("no data type"));
    p.set_data_type(onnx::TensorProto::FLOAT);
    p.set_data_location(onnx::TensorProto::EXTERNAL);
    auto* kv = p.add_external_data();
    kv->set_key("location");
    kv->set_value("weights.bin");
    CHECK_THAT(error_of(tensor_from_proto(p, "m")), Catch::Contains("external file"));
    p.set_data_location(onnx::TensorProto::DEFAULT);  // entries without the location and no data
    CHECK_THAT(error_of(tensor_from_proto(p, "m")), Catch::Contains("external file"));
    p.set_raw_data(std::string(16, '\0'));  // data present: the location decides, stale entries are ignored
    CHECK(tensor_from_proto(p, "m").has_value());
    p.set_data_location(onnx::TensorProto::EXTERNAL);
    CHECK_THAT(error_of(tensor_from_proto(p, "m")), Catch::Contains("external file"));
  }
  SECTION("bytes that are not a TensorProto") {
    std::string name = "stale";
    CHECK(error_of(read_tensor_proto("\xff\xff\xff\xff", "g.pb", &name)) ==
          "g.pb: not an ONNX TensorProto (protobuf parse failed)");
    CHECK(name.empty());
    CHECK_THAT(error_of(read_tensor_proto("", "e.pb", &name)), Catch::Contains("no data type"));
    CHECK_THAT(error_of(read_tensor_proto(write_npy(patterned(dtype::f32, {2})), "n.pb", nullptr)),
               Catch::StartsWith("n.pb: "));
  }
  SECTION("names from the file stay on one line") {
    p.set_name("bad\nname");
    p.clear_dims();
    p.add_dims(-1);
    std::string msg = error_of(tensor_from_proto(p, "m"));
    CHECK(msg.find('\n') == std::string::npos);
  }
  SECTION("garbage and truncations never crash") {
    std::string file = write_tensor_proto(patterned(dtype::i16, {3, 4}), "input_0");
    for (size_t len = 0; len < file.size(); ++len) CHECK_FALSE(read_tensor_proto(file.substr(0, len), "t.pb", nullptr).has_value());
    std::mt19937 rng(99);
    for (int i = 0; i < 5000; ++i) {
      std::string m = file;
      for (int e = 0; e < 1 + i % 3; ++e) m[rng() % m.size()] = static_cast<char>(rng());
      auto t = read_tensor_proto(m, "m.pb", nullptr);
      if (t) CHECK(t->bytes() <= m.size());
    }
  }
}

// ---------------------------------------------------------------- raw

TEST_CASE("raw bytes", "[tensor_io]") {
  auto t = read_raw(std::string(12, '\x01'), dtype::i32, {3}, "x.bin");
  REQUIRE(t.has_value());
  CHECK(t->data<int32_t>()[2] == 0x01010101);
  CHECK(error_of(read_raw(std::string(11, '\0'), dtype::f32, {1, 3}, "x.bin")) ==
        "x.bin: raw data for shape [1, 3] float32 must be 12 bytes, got 11");
  CHECK(error_of(read_raw(std::string(13, '\0'), dtype::f32, {1, 3}, "x.bin")) ==
        "x.bin: raw data for shape [1, 3] float32 must be 12 bytes, got 13");
  auto s = read_raw(std::string(8, '\0'), dtype::f64, {}, "s.bin");
  REQUIRE(s.has_value());
  CHECK(s->rank() == 0);
  CHECK(read_raw("", dtype::u8, {0, 7}, "e.bin").has_value());
  auto b = read_raw(std::string("\x00\x02", 2), dtype::boolean, {2}, "b.bin");
  REQUIRE(b.has_value());
  CHECK(static_cast<const uint8_t*>(b->raw())[1] == 1);
  CHECK_THAT(error_of(read_raw("", dtype::f32, {-1, 3}, "x.bin")), Catch::Contains("symbolic"));
  CHECK_THAT(error_of(read_raw("", dtype::f32, {int64_t{1} << 40, int64_t{1} << 40}, "x.bin")), Catch::Contains("larger"));
  CHECK_THAT(error_of(read_raw("", dtype::string, {1}, "x.bin")), Catch::Contains("not supported"));
}

// ---------------------------------------------------------------- files

TEST_CASE("tensor files by extension", "[tensor_io]") {
  temp_dir dir;
  tensor t = patterned(dtype::f32, {2, 3});
  const shape_t shape{2, 3};
  for (const char* name : {"a.npy", "b.pb", "c.bin", "d.raw", "UPPER.NPY", "noext"}) {
    INFO(name);
    std::string path = dir / name;
    REQUIRE(write_tensor_file(path, t, "out0").is_ok());
    std::string got_name = "stale";
    auto back = read_tensor_file(path, dtype::f32, &shape, &got_name);
    REQUIRE(back.has_value());
    CHECK(back->shape() == shape);
    CHECK(tensor_bytes(*back) == tensor_bytes(t));
    CHECK(got_name == (std::string(name) == "b.pb" ? "out0" : ""));
  }
  CHECK(read_file(dir / "a.npy").compare(0, 6, "\x93NUMPY") == 0);
  CHECK(read_file(dir / "c.bin") == tensor_bytes(t));
  CHECK(dir.count() == 6);  // no temporary files left behind

  SECTION(".npy and .pb carry their own shape and dtype") {
    CHECK(read_tensor_file(dir / "a.npy", dtype::undefined, nullptr, nullptr).has_value());
    CHECK(read_tensor_file(dir / "b.pb", dtype::undefined, nullptr, nullptr).has_value());
  }
  SECTION("raw needs dtype and shape") {
    CHECK_THAT(error_of(read_tensor_file(dir / "c.bin", dtype::f32, nullptr, nullptr)),
               Catch::Contains("raw bytes need the input's static shape"));
    CHECK_THAT(error_of(read_tensor_file(dir / "c.bin", dtype::undefined, &shape, nullptr)),
               Catch::Contains("raw bytes need the input's dtype"));
    const shape_t wrong{3, 3};
    CHECK(error_of(read_tensor_file(dir / "c.bin", dtype::f32, &wrong, nullptr)) ==
          dir / "c.bin" + ": raw data for shape [3, 3] float32 must be 36 bytes, got 24");
  }
  SECTION("dtype mismatch") {
    CHECK(error_of(read_tensor_file(dir / "a.npy", dtype::f64, nullptr, nullptr)) ==
          dir / "a.npy" + ": holds float32 but the model input is float64");
  }
  SECTION("unreadable paths") {
    CHECK(error_of(read_tensor_file(dir / "missing.npy", dtype::f32, nullptr, nullptr)) ==
          "cannot read '" + dir / "missing.npy" + "': No such file or directory");
    auto d = read_tensor_file(dir.path, dtype::f32, &shape, nullptr);
    CHECK(error_of(d) == "cannot read '" + dir.path + "': Is a directory");
    CHECK(d.error().kind() == error_kind::invalid_input);
  }
  SECTION("overwrites, and writes through symlinks") {
    tensor u = patterned(dtype::i64, {4});
    REQUIRE(write_tensor_file(dir / "a.npy", u, "o").is_ok());
    CHECK(read_tensor_file(dir / "a.npy", dtype::i64, nullptr, nullptr).has_value());
    std::filesystem::create_symlink(dir / "c.bin", dir / "link.bin");
    REQUIRE(write_tensor_file(dir / "link.bin", u, "o").is_ok());
    CHECK(std::filesystem::is_symlink(dir / "link.bin"));
    CHECK(read_file(dir / "c.bin") == tensor_bytes(u));
  }
  SECTION("fresh files are created exclusively, written directly, and never replace one") {
    tensor u = patterned(dtype::i64, {4});
    REQUIRE(write_tensor_file(dir / "f.npy", u, "o", /*fresh=*/true).is_ok());
    auto back = read_tensor_file(dir / "f.npy", dtype::i64, nullptr, nullptr);
    REQUIRE(back.has_value());
    CHECK(tensor_bytes(*back) == tensor_bytes(u));
    status again = write_tensor_file(dir / "f.npy", t, "o", /*fresh=*/true);
    CHECK(again.kind() == error_kind::io);
    CHECK(again.message() == "cannot write '" + dir / "f.npy" + "': File exists");
    CHECK(read_tensor_file(dir / "f.npy", dtype::i64, nullptr, nullptr).has_value());  // untouched
    for (const auto& e : std::filesystem::directory_iterator(dir.path))  // no temporary files left
      CHECK(e.path().filename().string().find(".tmp-") == std::string::npos);
  }
  SECTION("write errors name the path") {
    status s = write_tensor_file(dir / "nope/out.npy", t, "o");
    CHECK(s.kind() == error_kind::io);
    CHECK(s.message() == "cannot write '" + dir / "nope/out.npy" + "': No such file or directory");
    status d = write_tensor_file(dir.path, t, "o");
    CHECK(d.message() == "cannot write '" + dir.path + "': Is a directory");
    CHECK_FALSE(write_tensor_file(dir / "u.npy", tensor(), "o").is_ok());
    if (::geteuid() != 0) {  // root ignores permissions
      std::filesystem::create_directory(dir / "ro");
      ::chmod((dir / "ro").c_str(), 0500);
      status r = write_tensor_file(dir / "ro/x.npy", t, "o");
      CHECK(r.message() == "cannot write '" + dir / "ro/x.npy" + "': Permission denied");
      ::chmod((dir / "ro").c_str(), 0700);
    }
  }
  SECTION("bfloat16 outputs become float32 .npy, stay bfloat16 in .pb and raw") {
    tensor b = patterned(dtype::bf16, {3});
    REQUIRE(write_tensor_file(dir / "b16.npy", b, "o").is_ok());
    CHECK(read_tensor_file(dir / "b16.npy", dtype::undefined, nullptr, nullptr)->type() == dtype::f32);
    REQUIRE(write_tensor_file(dir / "b16.pb", b, "o").is_ok());
    CHECK(read_tensor_file(dir / "b16.pb", dtype::bf16, nullptr, nullptr)->type() == dtype::bf16);
  }
  SECTION("a corrupt file reports its own path") {
    write_file(dir / "bad.npy", std::string("\x93NUMPY\x01\x00\x04\x00{}  ", 14));
    CHECK_THAT(error_of(read_tensor_file(dir / "bad.npy", dtype::f32, nullptr, nullptr)),
               Catch::StartsWith(dir / "bad.npy: bad .npy header"));
    write_file(dir / "bad.pb", std::string("\x0a\xff", 2));
    CHECK_THAT(error_of(read_tensor_file(dir / "bad.pb", dtype::f32, nullptr, nullptr)),
               Catch::StartsWith(dir / "bad.pb: "));
  }
}
