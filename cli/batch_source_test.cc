#include "cli/batch_source.h"

#include <catch2/catch.hpp>

using namespace gpugrid;
using namespace gpugrid::cli;

TEST_CASE("batch source: list files", "[batch]") {
  auto jobs = parse_batch_list("# inputs\na.npy\n\nx=b/c.npy y=/abs/d.npy\na.npy\n", "/data", "list.txt");
  REQUIRE(jobs.has_value());
  REQUIRE(jobs->size() == 3);
  CHECK((*jobs)[0].id == "a");
  CHECK((*jobs)[0].inputs == std::vector<std::string>{"/data/a.npy"});
  CHECK((*jobs)[1].id == "c");
  CHECK((*jobs)[1].inputs == std::vector<std::string>{"x=/data/b/c.npy", "y=/abs/d.npy"});
  CHECK((*jobs)[2].id == "a-2");   // repeated ids stay stable and distinct
  auto bad = parse_batch_list("ok.npy\n=x\n", "", "list.txt");
  REQUIRE_FALSE(bad.has_value());
  CHECK(bad.error().message().find("list.txt:2") != std::string::npos);
  CHECK_FALSE(parse_batch_list("-\n", "", "list.txt").has_value());
}

TEST_CASE("batch source: NDJSON", "[batch]") {
  auto jobs = parse_batch_ndjson("{\"x\": \"in/1.npy\", \"id\": \"first job\"}\n\n{\"x\": \"in/2.npy\"}\n", "stdin");
  REQUIRE(jobs.has_value());
  REQUIRE(jobs->size() == 2);
  CHECK((*jobs)[0].id == "first_job");
  CHECK((*jobs)[0].inputs == std::vector<std::string>{"x=in/1.npy"});
  CHECK((*jobs)[1].id == "2");
  auto bad = parse_batch_ndjson("{\"x\": 3}\n", "stdin");
  REQUIRE_FALSE(bad.has_value());
  CHECK(bad.error().message().find("stdin:1") != std::string::npos);
  CHECK_FALSE(parse_batch_ndjson("[1,2]\n", "stdin").has_value());
  CHECK_FALSE(parse_batch_ndjson("{\"id\": \"only\"}\n", "stdin").has_value());
}

TEST_CASE("batch source: ids are file-name safe", "[batch]") {
  std::vector<batch_job> jobs = {{"../../etc", {"a"}}, {"", {"x=dir/.hidden"}}, {"a/b", {"q"}}};
  assign_batch_ids(&jobs);
  CHECK(jobs[0].id == "job.._.._etc");
  CHECK(jobs[1].id == "job.hidden");
  CHECK(jobs[2].id == "a_b");
}
