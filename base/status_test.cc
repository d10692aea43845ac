#include <catch2/catch.hpp>

#include "base/status.h"

using namespace gpugrid;

TEST_CASE("errors stay on one line whatever a file puts in a name", "[base]") {
  status s = invalid_input("node '{}' has no input", std::string("evil\nname\r\x01"));
  CHECK(s.message() == "node 'evil\\nname\\r\\x01' has no input");
  CHECK(s.with_context("model.onnx\n").message().find('\n') == std::string::npos);
  CHECK(status(error_kind::io, "plain text").message() == "plain text");
  CHECK(exit_code_for(error_kind::invalid_input) == 2);
  CHECK(exit_code_for(error_kind::no_provider) == 3);
  CHECK(exit_code_for(error_kind::verification) == 4);
}
