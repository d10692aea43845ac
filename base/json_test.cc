#include "base/json.h"

#include <cmath>
#include <limits>

#include <catch2/catch.hpp>

using namespace gpugrid;

TEST_CASE("json: compact documents that never throw on the program's values", "[json]") {
  json j;
  j["b"] = 1;
  j["a"] = std::numeric_limits<double>::quiet_NaN();
  j["s"] = std::string("q\"\n\x01 \xff");
  CHECK(dump_json(j) == "{\"b\":1,\"a\":null,\"s\":\"q\\\"\\n\\u0001 \xEF\xBF\xBD\"}");  // keys in the order set
  CHECK(dump_json(json(0.1)) == "0.1");
}

TEST_CASE("json: lists have one element per line and parse back", "[json]") {
  json list = json::array({json{{"x", 1}}, json{{"x", 2}}});
  std::string text = dump_json_list(list);
  CHECK(text == "[\n{\"x\":1},\n{\"x\":2}\n]");
  CHECK(parse_json(text) == list);
  CHECK(dump_json_list(json::array()) == "[]");
  CHECK(parse_json("{oops").is_discarded());
}

TEST_CASE("json_writer: strings and numbers through nlohmann-json", "[json]") {
  json_writer w;
  w.begin_object().key("k").value("a\"b").key("n").value(int64_t{-3}).key("d").value(1.5).key("z").null();
  w.key("l").begin_array().value(true).value(std::string("x")).end_array().end_object();
  CHECK(w.str() == R"({"k":"a\"b","n":-3,"d":1.5,"z":null,"l":[true,"x"]})");
  CHECK(parse_json(w.str()).is_object());
  CHECK(json_writer::escape("\t") == "\"\\t\"");
}
