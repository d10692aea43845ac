// The bridge into CAF: a frame received by the transport reaches an actor without a copy, and
// the connection reads on only after the actor has released it.
#include "net/actor_bridge.h"

#include <catch2/catch.hpp>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/scoped_actor.hpp>

#include <future>

#include "net/inbox.h"
#include "net/testing.h"

using namespace gpugrid;
using namespace gpugrid::net;
using namespace std::chrono_literals;

namespace {

struct seen {
  std::promise<void> up;
  std::promise<std::vector<uint32_t>> chunks;  // indices, in order of arrival
  std::promise<std::string> down;
  std::vector<uint32_t> got;
  const decoded_frame* first_frame = nullptr;  // identity of the shared frame
};

caf::behavior receiver(caf::event_based_actor*, seen* s, size_t expect) {
  return {
      [s](wire_up_atom, const connection_ptr& c) {
        if (c) s->up.set_value();
      },
      [s, expect](wire_atom, const inbound_ptr& in) {
        if (const auto* c = std::get_if<model_chunk>(&in->msg())) {
          s->got.push_back(c->index);
          if (s->got.size() == expect) s->chunks.set_value(s->got);
        }
        in->release();
        // Reply through the connection: thread-safe from inside an actor.
        (void)in->from()->send(pong{in->frame().sequence});
      },
      [s](wire_down_atom, const connection_ptr&, const std::string& why) { s->down.set_value(why); },
  };
}

}  // namespace

TEST_CASE("the actor bridge forwards verified frames into an actor", "[net][actors]") {
  caf::actor_system_config cfg;
  cfg.set("scheduler.max-threads", 2);
  caf::actor_system sys{cfg};
  seen s;
  auto up = s.up.get_future();
  auto chunks = s.chunks.get_future();
  auto down = s.down.get_future();
  const size_t n = 20;
  caf::actor a = sys.spawn(receiver, &s, n);
  {
    transport_options o;
    o.read_window = 1;
    auto server = transport::create(identity::generate(), o, actor_handlers(a));
    REQUIRE(server.has_value());
    auto port = (*server)->listen("127.0.0.1", 0);
    REQUIRE(port.has_value());

    auto client = transport::create(identity::generate(), o, {});
    REQUIRE(client.has_value());
    auto c = (*client)->connect_sync((*server)->url());
    REQUIRE(c.has_value());
    REQUIRE(up.wait_for(2s) == std::future_status::ready);
    for (uint32_t i = 0; i < n; ++i) {
      model_chunk m;
      m.index = i;
      m.data = std::string(1000, 'a');
      while ((*c)->send(m) == send_result::queue_full) (*c)->wait_writable(100ms);
    }
    REQUIRE(chunks.wait_for(5s) == std::future_status::ready);
    auto order = chunks.get();
    for (uint32_t i = 0; i < n; ++i) CHECK(order[i] == i);
    (*c)->close();
    REQUIRE(down.wait_for(2s) == std::future_status::ready);
    CHECK(down.get().empty());  // an orderly close
    (*client)->stop();
    (*server)->stop();
  }
  caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
}
