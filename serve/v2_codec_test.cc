#include "serve/v2_codec.h"

#include <cstring>

#include <catch2/catch.hpp>

using namespace gpugrid;
using namespace gpugrid::serve;

TEST_CASE("v2 codec: JSON tensors, flat and nested", "[serve]") {
  auto r = parse_infer_request(
      R"({"id":"a1","inputs":[{"name":"x","shape":[2,3],"datatype":"FP32","data":[[1,2,3],[4,5,6.5]]},
          {"name":"k","shape":[2],"datatype":"INT64","data":[-1, 9007199254740993]},
          {"name":"m","shape":[1],"datatype":"BOOL","data":[true]}]})", -1);
  REQUIRE(r.has_value());
  CHECK(r->id == "a1");
  REQUIRE(r->inputs.size() == 3);
  CHECK(r->inputs[0].shape() == shape_t{2, 3});
  CHECK(r->inputs[0].data<float>()[5] == 6.5f);
  CHECK(r->inputs[1].type() == dtype::i64);
  CHECK(r->inputs[1].data<int64_t>()[1] == 9007199254740993LL);
  CHECK(r->inputs[2].data<bool>()[0]);
}

TEST_CASE("v2 codec: binary tensor data extension", "[serve]") {
  std::string header = R"({"inputs":[{"name":"x","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}}],
                           "outputs":[{"name":"y","parameters":{"binary_data":true}}]})";
  float v[2] = {1.5f, -2.0f};
  std::string body = header + std::string(reinterpret_cast<const char*>(v), 8);
  auto r = parse_infer_request(body, static_cast<int64_t>(header.size()));
  REQUIRE(r.has_value());
  CHECK(r->inputs[0].data<float>()[1] == -2.0f);
  REQUIRE(r->outputs.size() == 1);
  CHECK(r->outputs[0].binary);

  tensor y = tensor::from_vector<float>({2}, {3.0f, 4.0f});
  auto enc = encode_infer_response("m", *r, {"y"}, {y});
  REQUIRE(enc.has_value());
  REQUIRE(enc->header_length > 0);
  CHECK(enc->body.size() == static_cast<size_t>(enc->header_length) + 8);
  float back[2];
  std::memcpy(back, enc->body.data() + enc->header_length, 8);
  CHECK(back[1] == 4.0f);
  CHECK(enc->body.substr(0, enc->header_length).find("\"binary_data_size\":8") != std::string::npos);
}

TEST_CASE("v2 codec: JSON response holds every output by default", "[serve]") {
  infer_request req;
  tensor y = tensor::from_vector<int32_t>({1, 2}, {7, 8});
  auto enc = encode_infer_response("m", req, {"y"}, {y});
  REQUIRE(enc.has_value());
  CHECK(enc->header_length == -1);
  CHECK(enc->body == R"({"model_name":"m","model_version":"1","outputs":[{"data":[7,8],"datatype":"INT32","name":"y","shape":[1,2]}]})");
}

TEST_CASE("v2 codec: bad requests name what is wrong", "[serve]") {
  auto msg = [](const std::string& body, int64_t hl = -1) {
    auto r = parse_infer_request(body, hl);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().kind() == error_kind::invalid_input);
    return r.error().message();
  };
  CHECK(msg("{not json").find("not valid JSON") != std::string::npos);
  CHECK(msg("[1]").find("JSON object") != std::string::npos);
  CHECK(msg(R"({"inputs":[{"name":"x","shape":[3],"datatype":"FP32","data":[1,2]}]})").find("needs 3 elements") != std::string::npos);
  CHECK(msg(R"({"inputs":[{"name":"x","shape":[1],"datatype":"FP99","data":[1]}]})").find("FP99") != std::string::npos);
  CHECK(msg(R"({"inputs":[{"name":"x","shape":[1],"datatype":"INT8","data":[300]}]})").find("not a valid INT8") != std::string::npos);
  CHECK(msg(R"({"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":["a"]}]})").find("element 0") != std::string::npos);
  CHECK(msg(R"({"inputs":[{"name":"x","shape":[-1],"datatype":"FP32","data":[]}]})").find("shape dims") != std::string::npos);
  CHECK(msg(R"({"inputs":[{"name":"x","shape":[1099511627776,1099511627776],"datatype":"FP32","data":[]}]})").find("too large") != std::string::npos);
  std::string deep(100, '[');
  CHECK(msg(R"({"inputs":)" + deep).find("deeper") != std::string::npos);
  std::string h = R"({"inputs":[{"name":"x","shape":[4],"datatype":"FP32","parameters":{"binary_data_size":16}}]})";
  CHECK(msg(h + "abc", static_cast<int64_t>(h.size())).find("short") != std::string::npos);
  CHECK(msg(h, static_cast<int64_t>(h.size()) + 5).find("holds only") != std::string::npos);
  std::string h2 = R"({"inputs":[{"name":"x","shape":[4],"datatype":"FP32","parameters":{"binary_data_size":12}}]})";
  CHECK(msg(h2 + std::string(12, '\0'), static_cast<int64_t>(h2.size())).find("needs 16 bytes") != std::string::npos);
}

TEST_CASE("v2 codec: datatype names round-trip", "[serve]") {
  for (dtype t : {dtype::f32, dtype::f16, dtype::i64, dtype::u8, dtype::boolean, dtype::bf16}) {
    dtype back = dtype::undefined;
    REQUIRE(dtype_from_v2(v2_datatype(t), &back));
    CHECK(back == t);
  }
  dtype d;
  CHECK_FALSE(dtype_from_v2("BYTES", &d));
  CHECK(json_depth(R"({"a":"[[[[","b":[[1]]})", 64) == 3);
}

TEST_CASE("v2 codec: mutated requests fail cleanly or parse", "[serve]") {
  std::string header = R"({"id":"q","inputs":[{"name":"x","shape":[2,2],"datatype":"FP16","parameters":{"binary_data_size":8}},)"
                       R"({"name":"y","shape":[3],"datatype":"INT8","data":[1,[2,3]]}],"outputs":[{"name":"o"}],)"
                       R"("parameters":{"binary_data_output":true}})";
  std::string valid = header + std::string(8, '\x3c');
  REQUIRE(parse_infer_request(valid, static_cast<int64_t>(header.size())).has_value());
  uint64_t state = 12345;
  auto next = [&] {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<uint32_t>(state >> 33);
  };
  const char alphabet[] = "{}[]\",:0123456789-e.a \\";
  int parsed = 0;
  for (int i = 0; i < 3000; ++i) {
    std::string body = valid;
    int edits = 1 + next() % 4;
    for (int e = 0; e < edits; ++e) {
      size_t at = next() % body.size();
      switch (next() % 3) {
        case 0: body[at] = alphabet[next() % (sizeof(alphabet) - 1)]; break;
        case 1: body.erase(at, 1 + next() % 3); break;
        default: body.insert(at, 1, alphabet[next() % (sizeof(alphabet) - 1)]); break;
      }
      if (body.empty()) body = "{";
    }
    int64_t hl = next() % 4 == 0 ? -1 : static_cast<int64_t>(next() % (body.size() + 2));
    auto r = parse_infer_request(body, hl);
    if (r.has_value()) {
      ++parsed;
      for (const auto& t : r->inputs) CHECK(t.bytes() <= body.size() * 8);
    } else {
      CHECK(r.error().kind() == error_kind::invalid_input);
      CHECK(r.error().message().find('\n') == std::string::npos);
    }
  }
  CHECK(parsed < 3000);
}
