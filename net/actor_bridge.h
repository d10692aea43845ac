// The bridge from the transport's I/O threads into CAF actors (CAF 0.17).
//
// actor_handlers(dest) returns transport handlers that anon_send every event to `dest`:
//   (wire_atom, inbound_ptr)                          a verified message; the frame is shared, not
//                                                     copied. The connection reads its next frame
//                                                     when the actor calls release() on it or
//                                                     drops the last reference, so a busy actor
//                                                     slows its peers down instead of queueing.
//   (wire_up_atom, connection_ptr)                    a connection finished its handshake
//   (wire_down_atom, connection_ptr, std::string)     it closed; the string is empty for an
//                                                     orderly close, else why
// Replies go back through connection_ptr->send(), which is thread-safe and never blocks. If
// `dest` has exited, messages are dropped (and released), so the connection keeps draining.
//
// Only this header (and the actors) include CAF; transport.h stays free of it.
#pragma once

#include <string>

#include <caf/actor.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>

#include "net/transport.h"

namespace gpugrid::net {

using wire_atom = caf::atom_constant<caf::atom("wire")>;
using wire_up_atom = caf::atom_constant<caf::atom("wire_up")>;
using wire_down_atom = caf::atom_constant<caf::atom("wire_down")>;

transport_handlers actor_handlers(caf::actor dest);

}  // namespace gpugrid::net

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(gpugrid::net::inbound_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(gpugrid::net::connection_ptr)
