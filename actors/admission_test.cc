#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "actors/admission.h"

using namespace gpugrid;
using namespace gpugrid::grid;

namespace {

admission_facts idle() {
  admission_facts f;
  f.max_model_bytes = 1000;
  f.memory_budget = 4000;
  f.slots = 2;
  f.price = 0.5;
  return f;
}

std::string temp_file(const char* name) {
  auto d = std::filesystem::temp_directory_path() / (std::string("gg-adm-") + name + "-" + std::to_string(::getpid()));
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return (d / "unpaid.log").string();
}

}  // namespace

TEST_CASE("admission: an idle provider bids", "[grid][admission]") {
  admission a = admit_bid(idle());
  CHECK(a.accepted);
  CHECK(a.reason == decline_reason::none);
  CHECK(a.detail.empty());
}

TEST_CASE("admission: each rule declines with its own reason", "[grid][admission]") {
  auto check = [](admission_facts f, decline_reason why, const char* text) {
    admission a = admit_bid(f);
    CHECK_FALSE(a.accepted);
    CHECK(a.reason == why);
    CHECK_THAT(a.detail, Catch::Contains(text));
  };
  auto f = idle();
  f.draining = true;
  check(f, decline_reason::draining, "shutting down");
  f = idle();
  f.ledger_failed = true;
  f.ledger_error = "No space left on device";
  check(f, decline_reason::internal, "cannot record payments now (No space left on device)");
  f = idle();
  f.unpaid_for_client = 8;
  check(f, decline_reason::internal, "8 jobs done for this client are unpaid");
  f = idle();
  f.model_bytes = 1001;
  check(f, decline_reason::too_big, "takes at most 1000");
  f = idle();
  f.max_model_bytes = 10000;
  f.model_bytes = 5000;
  check(f, decline_reason::too_big, "keeps at most 4000 in memory");
  f = idle();
  f.bad_model = "unsupported op Foo";
  check(f, decline_reason::unsupported, "unsupported op Foo");
  f = idle();
  f.busy = 4;  // 2 slots running, 2 waiting
  check(f, decline_reason::busy, "4 jobs running or queued");
  f = idle();
  f.max_price = 0.25;
  check(f, decline_reason::too_cheap, "above the limit 0.25");
}

TEST_CASE("admission: the limits are inclusive where the client is within them", "[grid][admission]") {
  auto f = idle();
  f.unpaid_for_client = 7;   // one below the credit
  f.model_bytes = 1000;      // exactly the largest model
  f.busy = 3;                // one place left in the queue
  f.max_price = 0.5;         // exactly the price
  CHECK(admit_bid(f).accepted);
  // Draining comes first: the rest is not even looked at.
  f.draining = true;
  f.unpaid_for_client = 100;
  CHECK(admit_bid(f).reason == decline_reason::draining);
}

TEST_CASE("admission: a job must pay what it costs here and come from a client in credit", "[grid][admission]") {
  auto f = idle();
  CHECK(admit_execute(f, 0.01, 0).accepted);          // cost unknown: metered instead
  CHECK(admit_execute(f, 1.0, 1.0).accepted);
  CHECK(admit_execute(f, 1.0 - 1e-9, 1.0).accepted);  // rounding of the receipt's micros
  admission a = admit_execute(f, 0.5, 1.0);
  CHECK_FALSE(a.accepted);
  CHECK(a.reason == decline_reason::too_cheap);
  CHECK_THAT(a.detail, Catch::Contains("costs 1 credits here; it offers 0.5"));
  f.unpaid_for_client = 8;
  CHECK(admit_execute(f, 1.0, 1.0).reason == decline_reason::internal);
  f = idle();
  f.draining = true;  // a job already awarded still runs while draining
  CHECK(admit_execute(f, 1.0, 1.0).accepted);
}

TEST_CASE("unpaid jobs are counted per client and survive reopening", "[grid][admission]") {
  std::string path = temp_file("reopen");
  key32 a{}, b{};
  a[0] = 1;
  b[0] = 2;
  {
    auto book = unpaid_book::open(path);
    REQUIRE(book.has_value());
    REQUIRE(book->add(job_id{1}, a).is_ok());
    REQUIRE(book->add(job_id{2}, a).is_ok());
    REQUIRE(book->add(job_id{2}, a).is_ok());  // the same job twice counts once
    REQUIRE(book->add(job_id{3}, b).is_ok());
    REQUIRE(book->paid(job_id{1}).is_ok());
    REQUIRE(book->paid(job_id{9}).is_ok());    // unknown: ignored
    CHECK(book->count(a) == 1);
    CHECK(book->count(b) == 1);
  }
  auto again = unpaid_book::open(path);
  REQUIRE(again.has_value());
  CHECK(again->count(a) == 1);
  CHECK(again->count(b) == 1);
  CHECK(again->size() == 2);
  // The ledger already holds job 3 (its receipt came just before a crash): paid at start.
  auto third = unpaid_book::open(path, [](const job_id& j) { return j == job_id{3}; });
  REQUIRE(third.has_value());
  CHECK(third->count(b) == 0);
  CHECK(third->count(a) == 1);
  std::filesystem::remove_all(std::filesystem::path(path).parent_path());
}

TEST_CASE("a torn last line of the unpaid file is ignored and the file stays small", "[grid][admission]") {
  std::string path = temp_file("torn");
  key32 a{};
  a[0] = 7;
  {
    auto book = unpaid_book::open(path);
    REQUIRE(book.has_value());
    REQUIRE(book->add(job_id{1}, a).is_ok());
  }
  {
    std::ofstream out(path, std::ios::app);
    out << "U 0200000000000000000000000000000";  // a crash in the middle of a line
  }
  auto book = unpaid_book::open(path);
  REQUIRE(book.has_value());
  CHECK(book->count(a) == 1);
  // Many paid jobs later, the file holds about what is unpaid, not every change.
  for (uint16_t i = 10; i < 10 + unpaid_book::compact_after_lines; ++i) {
    job_id j{};
    j[0] = static_cast<uint8_t>(i);
    j[1] = static_cast<uint8_t>(i >> 8);
    REQUIRE(book->add(j, a).is_ok());
    REQUIRE(book->paid(j).is_ok());
  }
  CHECK(book->count(a) == 1);
  CHECK(std::filesystem::file_size(path) < unpaid_book::compact_after_lines * 80);
  // A job added after the file was rewritten lands in the new file.
  REQUIRE(book->add(job_id{3}, a).is_ok());
  auto reread = unpaid_book::open(path);
  REQUIRE(reread.has_value());
  CHECK(reread->count(a) == 2);
  std::filesystem::remove_all(std::filesystem::path(path).parent_path());
}

TEST_CASE("an unpaid file that cannot be written is an error, not a silent loss", "[grid][admission]") {
  // A path under a regular file cannot be created, even by root.
  std::string path = temp_file("nowrite");
  { std::ofstream(path + ".blocker") << "x"; }
  auto book = unpaid_book::open(path + ".blocker/unpaid.log");
  REQUIRE_FALSE(book.has_value());
  CHECK(book.error().kind() == error_kind::io);
  std::filesystem::remove_all(std::filesystem::path(path).parent_path());
}

TEST_CASE("admission: a job from the network must come from this provider's bid, once, with room", "[grid][admission]") {
  award_facts f;
  f.bid_price = 1.0;
  f.offered = 1.0;
  f.queue_limit = 4;
  CHECK(admit_award(f).ok());
  auto refused = [](award_facts x, award_refusal why, const char* text) {
    award_decision d = admit_award(x);
    CHECK(d.why == why);
    CHECK_THAT(d.detail, Catch::Contains(text));
  };
  auto g = f;
  g.bid_price = -1;
  refused(g, award_refusal::not_awarded, "made no bid for the job");
  g = f;
  g.offered = 0.5;
  refused(g, award_refusal::underpaid, "offers 0.5, below this provider's bid 1");
  g = f;
  g.draining = true;
  refused(g, award_refusal::draining, "shutting down");
  g = f;
  g.already_running = true;
  refused(g, award_refusal::duplicate, "already running");
  g = f;
  g.queued = 4;
  refused(g, award_refusal::queue_full, "4 jobs are running or queued");
  g.queued = 3;
  CHECK(admit_award(g).ok());
}
