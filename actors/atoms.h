// CAF atoms and message payload types shared by the grid's actors (CAF 0.17 API).
#pragma once

#include <memory>

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include "actors/messages.h"

namespace gpugrid::grid {

using bid_atom = caf::atom_constant<caf::atom("bid")>;
using exec_atom = caf::atom_constant<caf::atom("exec")>;
using info_atom = caf::atom_constant<caf::atom("info")>;
using receipt_atom = caf::atom_constant<caf::atom("receipt")>;
using cancel_atom = caf::atom_constant<caf::atom("cancel")>;


// The provider protocol. The in-process provider (spawn_provider, actors/provider.h) and the
// proxy of a remote one (actors/node.cc) both implement it, so the compiler checks each against
// it, and a client's requests are checked against the replies it declares:
//   (info_atom)                           -> provider_info_ptr
//   (bid_atom, bid_request_ptr)           -> bid_reply_ptr (accepted, or declined with a reason)
//   (exec_atom, execute_request_ptr)      -> execute_result_ptr (ok, or the failure)
//   (receipt_atom, receipt_ptr)           -> int32_t (a net::receipt_status)
//   (cancel_atom, execute_request_ptr)    the client abandoned this job (it timed out): stop it
using provider_actor = caf::typed_actor<caf::replies_to<info_atom>::with<provider_info_ptr>,
                                        caf::replies_to<bid_atom, bid_request_ptr>::with<bid_reply_ptr>,
                                        caf::replies_to<exec_atom, execute_request_ptr>::with<execute_result_ptr>,
                                        caf::replies_to<receipt_atom, receipt_ptr>::with<int32_t>,
                                        caf::reacts_to<cancel_atom, execute_request_ptr>>;

}  // namespace gpugrid::grid

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(gpugrid::grid::bid_request_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(gpugrid::grid::bid_reply_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(gpugrid::grid::execute_request_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(gpugrid::grid::execute_result_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(gpugrid::grid::provider_info_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(gpugrid::grid::receipt_ptr)
