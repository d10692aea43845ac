#include "net/actor_bridge.h"

#include <caf/send.hpp>

namespace gpugrid::net {

transport_handlers actor_handlers(caf::actor dest) {
  transport_handlers h;
  h.on_message = [dest](inbound_ptr in) { caf::anon_send(dest, wire_atom::value, std::move(in)); };
  h.on_open = [dest](const connection_ptr& c) { caf::anon_send(dest, wire_up_atom::value, c); };
  h.on_close = [dest](const connection_ptr& c, const status& why) {
    caf::anon_send(dest, wire_down_atom::value, c, why.is_ok() ? std::string() : why.message());
  };
  return h;
}

}  // namespace gpugrid::net
